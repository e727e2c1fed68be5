"""The ``secrets`` check: no secret in repr(), logs, error details or results, all run long."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from mta.config import MASK, build_options
from mta.testing.base import WHEN, CallError, Check, Failed, KitBase
from mta.testing.report import CheckResult
from mta.testing.results import plural

__all__ = ["MIN_SECRET_LEN", "SecretChecks"]

#: Secret values shorter than this are not searched for: they would match by chance.
MIN_SECRET_LEN = 4


class SecretChecks(KitBase):
    """The ``secrets`` check of :class:`~mta.testing.Conformance`."""

    async def check_secrets(self) -> CheckResult:
        """No value of an option declared secret in ``meta.options`` (of ``options`` and of
        ``bad_options``), nor the secret keys given to login, appears in ``repr()``/``str()``
        of an instance (built, logged in, used, destroyed), in any log record that reached the
        root logger, in what the adapter raised, or in the results it answered — during this
        check and the ones before."""
        async with self._checking("secrets") as check:
            adapter = await self._new(check)
            with contextlib.suppress(CallError, Failed):
                await self._login(check, adapter)
                accepted = await self._send(Check("send"), adapter, self._messages(2))
                self._look_at(adapter, "after send")
                if accepted:
                    await self._report(Check("report"), adapter, accepted)
            await self._destroy(check, adapter)
            self._look_at(adapter, "after destroy")
            secrets = self._secret_values()
            for problem in self._repr_errors:
                check.problem(problem)
            if not secrets:
                check.skip(
                    "nothing to look for: no secret option has a value, and the secret keys are "
                    f"empty or shorter than {MIN_SECRET_LEN} characters"
                )
            self._find(check, secrets)
            check.note(
                f"{plural(len(secrets), 'secret value')} ({', '.join(secrets)}) absent from "
                f"{plural(len(self._seen), 'repr, log record, error and result text')}"
            )
        assert check.result is not None
        return check.result

    def _find(self, check: Check, secrets: dict[str, str]) -> None:
        hits: dict[tuple[str, str], list[str]] = {}
        whens: dict[tuple[str, str], list[str]] = {}
        for label, value in secrets.items():
            for seen, text in self._seen:
                if value in text:
                    where, _, when = seen.partition(WHEN)
                    hits.setdefault((label, where), []).append(text)
                    moments = whens.setdefault((label, where), [])
                    if when and when not in moments:
                        moments.append(when)
        for (label, where), texts in hits.items():
            shown = texts[0]
            for value in sorted(secrets.values(), key=len, reverse=True):  # nor the report
                shown = shown.replace(value, MASK)
            shown = shown if len(shown) <= 160 else shown[:159] + "…"
            moments = whens[(label, where)]
            when = f" ({', '.join(moments)})" if moments else ""
            more = f" (and {len(texts) - 1} more like it)" if len(texts) > 1 and not when else ""
            check.problem(f"the {label} appears in {where}{when}: {shown!r}{more}")

    def _secret_values(self) -> dict[str, str]:
        """Label → value of every secret the kit knows (never printed: only the labels are)."""
        values: dict[str, str] = {}
        for source, raw in (("", self.options), (" of bad_options", self.bad_options)):
            if raw is None:
                continue
            for name, value in self._secret_options(raw).items():
                values[f"secret option {name!r}{source}"] = value
        values["secret_key"] = self.secret_key
        if self.bad_secret_key is not None:
            values["bad_secret_key"] = self.bad_secret_key
        unique: dict[str, str] = {}
        for label, value in values.items():
            if len(value) >= MIN_SECRET_LEN and value not in unique.values():
                unique[label] = value
        return unique

    def _secret_options(self, raw: Mapping[str, Any]) -> dict[str, str]:
        meta = self._meta
        if meta is None:
            return {}
        options: Mapping[str, Any] = raw
        if self._cls is not None:
            with contextlib.suppress(Exception):
                options, _ = build_options(raw, meta, "kit")  # ${ENV} resolved
        return {
            spec.name: str(options[spec.name])
            for spec in meta.options
            if getattr(spec, "secret", False) and options.get(spec.name) not in (None, "")
        }
