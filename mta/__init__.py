"""sms-mta: an SMS message transfer agent (RabbitMQ batches → partner adapters → reports)."""

__version__ = "0.1.0"
