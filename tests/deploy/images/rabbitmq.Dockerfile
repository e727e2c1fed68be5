# RabbitMQ from Debian's package on the local base image: stands in for the official
# `rabbitmq` image in the compose test (no container registry is reachable here).
ARG BASE_IMAGE=sms-mta-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /etc/rabbitmq/conf.d \
 && printf 'loopback_users = none\nlisteners.tcp.default = 5672\n' >/etc/rabbitmq/conf.d/05-container.conf \
 && printf '[rabbitmq_prometheus].\n' >/etc/rabbitmq/enabled_plugins \
 && chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq
ENV RABBITMQ_CONFIG_FILES=/etc/rabbitmq/conf.d
USER rabbitmq
EXPOSE 5672 15692
CMD ["rabbitmq-server"]
