"""Promotion: an alias moves to a version only when every check passes, and every decision is recorded.

Checks, all failing closed:

- the version's source run FINISHED (not FAILED, KILLED or still RUNNING);
- each gate (``accuracy >= 0.9``, the grammar of :mod:`nbmlops.runner.gates`) holds on the run's metrics;
- each ``--beat ALIAS:METRIC[:max|min]``: the candidate is at least as good as the version holding ALIAS
  (higher is better unless the metric's name says loss/error/..., or ``:min`` says so); on an online metric
  (``champion:online_accuracy``, ``online_mae``, ``online_rmse``) both are measured on the live traffic with
  feedback (:mod:`nbmlops.registry.traffic_monitor`), and a version without such traffic fails the check;
- the evaluation data: when a version holding the target alias (or a beaten alias) recorded evaluation
  data, the candidate must have been evaluated on the same fingerprints, unless the caller accepts new
  evaluation data explicitly, or it beat that version on live traffic.

MLflow aliases have no compare-and-set, so the move happens under a lock (an atomic create of a
registered model named ``nbmlops-lock.<name>.<alias>``, which works on any MLflow store) and the alias
is read again inside it: of two promotions racing for one alias, exactly one wins and the other gets
:class:`AliasChangedError`. Each decision, accepted or refused, is a tag ``nbmlops.decision.<ns>`` on
the candidate version holding who, when, the alias, every check with its values, and the reason.

Who is the MLflow user an authenticating tracking server (``mlflow server --app-name basic-auth``) knows the
credentials as, else the user they name, else ``user@host`` of this machine. Such a server's permissions hold:
a user who may not read the model, or change it (``EDIT``, to set an alias and record a decision), gets
:class:`PermissionRefused` naming the user, the model and the permission, and nothing is changed.
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from nbmlops.backend import identity as mlflow_identity
from nbmlops.backend import registry as mlflow_registry
from nbmlops.config import Settings, resolve_settings
from nbmlops.exceptions import AliasChangedError, PermissionRefused, PromotionRefused, RecordRejected
from nbmlops.registry.models import (
    DECISION_TAG_PREFIX,
    LOCK_PREFIX,
    Decision,
    ModelNotFoundError,
    ModelReference,
    ModelReferenceError,
    ModelVersionInfo,
    RegistryError,
    check_alias,
    get_version,
    parse_reference,
    registry_client,
)
from nbmlops.registry.traffic_monitor import DEFAULT_SINCE, ONLINE_METRICS, VersionTraffic, version_traffic, window
from nbmlops.runner.gates import evaluate_gate, infer_maximize, non_finite, parse_gate

__all__ = ["AliasChangedError", "Beat", "Check", "Promotion", "PromotionRefused", "parse_beat", "promote"]

#: a ``--beat`` metric with this prefix is measured on live traffic
ONLINE_PREFIX = "online_"
LOCK_TIMEOUT_S = 30.0
LOCK_STALE_S = 120.0  # a lock older than this was left by a process that died holding it


@dataclass(frozen=True)
class Beat:
    """``ALIAS:METRIC[:max|min]``: the candidate must be at least as good as the holder of ``alias``."""

    alias: str
    metric: str
    maximize: bool

    def __str__(self) -> str:
        return f"{self.alias}:{self.metric}:{'max' if self.maximize else 'min'}"


def parse_beat(text: str) -> Beat:
    """Parse ``ALIAS:METRIC`` or ``ALIAS:METRIC:max|min`` (direction inferred from the metric's name)."""
    alias, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ModelReferenceError(f"--beat {text!r}: expected ALIAS:METRIC or ALIAS:METRIC:max|min")
    metric, direction = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and tail in ("max", "min"):
        metric, direction = head, tail
    if not metric:
        raise ModelReferenceError(f"--beat {text!r}: the metric name is empty")
    maximize = infer_maximize(metric) if direction is None else direction == "max"
    return Beat(check_alias(alias), metric, maximize)


@dataclass(frozen=True)
class Check:
    """One check of a promotion: ``kind`` is ``run``, ``gate``, ``beat`` or ``data``."""

    kind: str
    name: str
    passed: bool
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "passed": self.passed, "message": self.message,
                "values": self.values}


@dataclass(frozen=True)
class Promotion:
    """The outcome of :func:`promote`: accepted (the alias now points at the version) or refused."""

    name: str
    version: int
    alias: str
    accepted: bool
    checks: tuple[Check, ...]
    previous: int | None
    reason: str
    decided_at: str
    decided_by: str

    @property
    def exit_code(self) -> int:
        """0 accepted, 3 refused (as a failed gate in ``nbmlops run``)."""
        return 0 if self.accepted else 3

    def format(self) -> str:
        """The decision and each check, for the terminal."""
        verdict = "PROMOTED" if self.accepted else "REFUSED"
        was = f" (was version {self.previous})" if self.previous is not None else ""
        lines = [f"{verdict}: {self.name} version {self.version} -> @{self.alias}{was}"]
        lines += [f"  {'ok  ' if c.passed else 'FAIL'} {c.kind:5} {c.message}" for c in self.checks]
        if not self.accepted:
            lines.append(f"  reason: {self.reason}")
        return "\n".join(lines)


def promote(
    model: str | ModelReference,
    alias: str,
    *,
    gates: Sequence[str] = (),
    beat: Sequence[str | Beat] = (),
    allow_new_evaluation_data: bool = False,
    since: str | datetime | timedelta | None = DEFAULT_SINCE,
    settings: Settings | None = None,
) -> Promotion:
    """Point ``alias`` of the model at version ``model`` (``NAME/VERSION``) if every check passes.

    Returns the accepted :class:`Promotion` (also when the alias already pointed there: nothing to do).

    A ``beat`` on an online metric (``champion:online_accuracy``, ``online_mae``, ``online_rmse``) compares the
    two versions on the live traffic since ``since`` (:mod:`nbmlops.registry.traffic_monitor`: the rows each
    answered or scored as a shadow, with a label from feedback) instead of their runs' metrics; a version without
    such rows fails the check, and their evaluation data need not match.

    Raises:
        ModelReferenceError: a malformed reference, alias or ``beat``; GateSyntaxError: a malformed gate.
        ModelNotFoundError: no such version.
        PromotionRefused: a check failed (the registry is unchanged; the decision is recorded).
        AliasChangedError: another promotion moved the alias first (unchanged; recorded).
        PermissionRefused: the tracking server refused the user (their MLflow permission on the model or its
            source run is not enough); nothing was changed.
    """
    ref = parse_reference(model, bare=False) if isinstance(model, str) else model
    if ref.version is None:
        raise ModelReferenceError(f"promote needs NAME/VERSION, got {ref}")
    check_alias(alias)
    parsed_gates = [parse_gate(g) for g in gates]
    beats = [parse_beat(b) if isinstance(b, str) else b for b in beat]
    online = [b for b in beats if b.metric.startswith(ONLINE_PREFIX)]
    settings = settings or resolve_settings()
    client = registry_client(settings)
    candidate = get_version(ref, client=client)
    who = _who(settings)
    holders = {a: _holder(client, ref.name, a) for a in dict.fromkeys([alias, *(b.alias for b in beats)])}
    previous = holders[alias]
    if previous is not None and previous.version == candidate.version:
        return _decision(candidate, alias, True, (), previous, f"@{alias} already points at version {ref.version}", who)
    candidate_run = _run(client, candidate)
    checks = [_run_check(candidate, candidate_run)]
    metrics = dict(candidate_run.data.metrics) if candidate_run is not None else {}
    for gate in parsed_gates:
        result = evaluate_gate(gate, metrics)
        checks.append(Check("gate", str(gate), result.passed, result.message, dict(result.values)))
    live = _live(ref.name, candidate, [holders[b.alias] for b in online], since, settings) if online else {}
    for b in beats:
        if b in online:
            checks.append(_online_beat_check(b, candidate, holders[b.alias], live, since))
        else:
            checks.append(_beat_check(client, b, metrics, holders[b.alias]))
    checks += _data_checks(candidate, holders, allow_new_evaluation_data, frozenset(b.alias for b in online))
    failed = [c for c in checks if not c.passed]
    if failed:
        promotion = _decision(candidate, alias, False, checks, previous, "; ".join(c.message for c in failed), who)
        _record(client, promotion)
        raise PromotionRefused(promotion)
    with _AliasLock(client, ref.name, alias, who):
        now = {a: _holder(client, ref.name, a) for a in holders}
        moved = [a for a in holders if _number(now[a]) != _number(holders[a])]
        if moved:
            changes = ", ".join(f"@{a} {_shown(holders[a])} -> {_shown(now[a])}" for a in moved)
            promotion = _decision(
                candidate, alias, False, checks, previous,
                f"alias changed while the checks ran ({changes}): nothing was changed; run the promotion again", who,
            )
            _record(client, promotion)
            raise AliasChangedError(promotion)
        mlflow_registry.set_alias(client, ref.name, alias, candidate.version)
        promotion = _decision(candidate, alias, True, checks, previous, "every check passed", who)
        _record(client, promotion)
    return promotion


def _holder(client: Any, name: str, alias: str) -> ModelVersionInfo | None:
    try:
        return get_version(ModelReference(name, alias=alias), client=client)
    except ModelNotFoundError:
        return None


def _number(version: ModelVersionInfo | None) -> int | None:
    return version.version if version is not None else None


def _shown(version: ModelVersionInfo | None) -> str:
    return f"version {version.version}" if version is not None else "unset"


def _run(client: Any, version: ModelVersionInfo) -> Any:
    if not version.run_id:
        return None
    try:
        return mlflow_registry.get_run(client, version.run_id)
    except PermissionRefused:
        raise  # the user may not read the run: say so, rather than that it is missing
    except RecordRejected:
        return None


def _run_check(version: ModelVersionInfo, run: Any) -> Check:
    if run is None:
        return Check("run", "source run", False, f"version {version.version} has no source run in this store")
    status = run.info.status
    ok = status == "FINISHED"
    message = f"source run {run.info.run_id} is {status}" + ("" if ok else ", not FINISHED")
    return Check("run", "source run", ok, message, {"status": status})


def _metric(metrics: dict[str, float], name: str) -> tuple[float | None, str | None]:
    if name not in metrics:
        return None, "missing"
    value = float(metrics[name])
    return value, non_finite(value)


def _beat_check(client: Any, beat: Beat, metrics: dict[str, float], holder: ModelVersionInfo | None) -> Check:
    mine, problem = _metric(metrics, beat.metric)
    values: dict[str, Any] = {"candidate": mine}
    if problem:
        return Check("beat", str(beat), False, f"beat @{beat.alias}: the candidate's {beat.metric} is {problem}", values)
    if holder is None:
        return Check("beat", str(beat), True, f"beat @{beat.alias}: no version holds it, nothing to beat", values)
    run = _run(client, holder)
    theirs, problem = _metric(dict(run.data.metrics) if run else {}, beat.metric)
    values |= {"incumbent": theirs, "incumbent_version": holder.version}
    if problem:
        return Check(
            "beat", str(beat), False,
            f"beat @{beat.alias}: version {holder.version}'s {beat.metric} is {problem}, so they cannot be compared",
            values,
        )
    assert mine is not None and theirs is not None
    ok = mine >= theirs if beat.maximize else mine <= theirs
    relation = (">=" if beat.maximize else "<=") if ok else ("<" if beat.maximize else ">")
    message = f"beat @{beat.alias}: {beat.metric} {mine:.6g} {relation} {theirs:.6g} (version {holder.version})"
    return Check("beat", str(beat), ok, message, values)


def _live(name: str, candidate: ModelVersionInfo, holders: Sequence[ModelVersionInfo | None],
          since: str | datetime | timedelta | None, settings: Settings) -> dict[int, VersionTraffic]:
    """What the candidate and the holders of the aliases it must beat online did on the live traffic."""
    versions = [candidate.version, *(h.version for h in holders if h is not None)]
    return version_traffic(name, versions, since=since, settings=settings)


def _online_beat_check(beat: Beat, candidate: ModelVersionInfo, holder: ModelVersionInfo | None,
                       live: dict[int, VersionTraffic], since: str | datetime | timedelta | None) -> Check:
    """``--beat ALIAS:online_*``: the candidate's online metric on live traffic against the holder's."""
    when = window(since)
    if beat.metric not in ONLINE_METRICS:
        return Check("beat", str(beat), False, f"beat @{beat.alias}: {beat.metric} is not an online metric "
                                               f"({', '.join(ONLINE_METRICS)})")
    found: dict[str, Any] = {"window": when}
    sides = [("candidate", candidate)] + ([("incumbent", holder)] if holder is not None else [])
    for role, version in sides:
        traffic = live[version.version]
        found[role] = traffic.online.get(beat.metric)
        found[f"{role}_labelled_rows"] = traffic.labelled
        problem = None
        if traffic.source == "none":
            problem = f"version {version.version} has no logged traffic {when} (serve it, or shadow it: " \
                      f"nbmlops serve {version.name}@ALIAS --shadow ALIAS)"
        elif not traffic.labelled:
            problem = f"version {version.version} has no feedback on its {traffic.rows} row(s) {when} " \
                      "(POST /feedback with the request ids and labels)"
        elif beat.metric not in traffic.online:
            problem = f"version {version.version}'s labelled rows are a {traffic.task}'s: it has " \
                      f"{', '.join(traffic.online)}, not {beat.metric}"
        if problem:
            return Check("beat", str(beat), False, f"beat @{beat.alias} on live traffic: {problem}", found)
        if holder is None:
            return Check("beat", str(beat), True, f"beat @{beat.alias}: no version holds it, nothing to beat", found)
    assert holder is not None
    found["incumbent_version"] = holder.version
    mine, theirs = found["candidate"], found["incumbent"]
    ok = mine >= theirs if beat.maximize else mine <= theirs
    relation = (">=" if beat.maximize else "<=") if ok else ("<" if beat.maximize else ">")
    message = (f"beat @{beat.alias} on live traffic {when}: {beat.metric} {mine:.6g} {relation} {theirs:.6g} "
               f"(version {holder.version}; {found['candidate_labelled_rows']} and "
               f"{found['incumbent_labelled_rows']} labelled rows)")
    return Check("beat", str(beat), ok, message, found)


def _data_checks(candidate: ModelVersionInfo, holders: dict[str, ModelVersionInfo | None],
                 allow_new: bool, live_aliases: frozenset[str] = frozenset()) -> list[Check]:
    mine = candidate.datasets("evaluation")
    checks = []
    seen: set[int] = set()
    for alias, holder in holders.items():
        if holder is None or holder.version in seen:
            continue
        seen.add(holder.version)
        theirs = holder.datasets("evaluation")
        if not theirs:
            continue
        same = set(mine.values()) == set(theirs.values())
        values = {"candidate": mine, "incumbent": theirs, "incumbent_version": holder.version}
        if alias in live_aliases and not same:
            checks.append(Check("data", f"evaluation data vs @{alias}", True,
                                f"compared with version {holder.version} (@{alias}) on live traffic: their "
                                "evaluation data need not match", values))
        elif same:
            checks.append(Check("data", f"evaluation data vs @{alias}", True,
                                f"evaluated on the same data as version {holder.version} (@{alias})", values))
        elif allow_new:
            checks.append(Check("data", f"evaluation data vs @{alias}", True,
                                f"evaluation data differs from version {holder.version}'s (@{alias}): accepted "
                                "as asked", values))
        else:
            what = "has no recorded evaluation data" if not mine else "was evaluated on different data"
            checks.append(Check(
                "data", f"evaluation data vs @{alias}", False,
                f"the candidate {what} than version {holder.version} (@{alias}: "
                f"{', '.join(f'{k}={v[:12]}' for k, v in theirs.items())}): its metrics are not comparable "
                "(accept explicitly with --allow-new-evaluation-data)", values,
            ))
    return checks


def _decision(candidate: ModelVersionInfo, alias: str, accepted: bool, checks: Sequence[Check],
              previous: ModelVersionInfo | None, reason: str, by: str) -> Promotion:
    return Promotion(
        name=candidate.name, version=candidate.version, alias=alias, accepted=accepted, checks=tuple(checks),
        previous=_number(previous), reason=reason,
        decided_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"), decided_by=by,
    )


def _record(client: Any, promotion: Promotion) -> None:
    decision = Decision(
        at=promotion.decided_at, by=promotion.decided_by, alias=promotion.alias, accepted=promotion.accepted,
        checks=tuple(c.as_dict() for c in promotion.checks), reason=promotion.reason, previous=promotion.previous,
    )
    mlflow_registry.set_version_tag(
        client, promotion.name, promotion.version, f"{DECISION_TAG_PREFIX}{time.time_ns()}", decision.to_tag()
    )


def _who(settings: Settings) -> str:
    """Who decides: the MLflow user an authenticating tracking server knows (or the one the credentials name),
    else ``user@host`` of this machine."""
    user = mlflow_identity.recorded_user(settings.tracking_uri, settings.call_timeout)
    if user is not None:
        return user
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class _AliasLock:
    """A cross-process lock on one alias: creating a registered model is atomic in every MLflow store."""

    def __init__(self, client: Any, name: str, alias: str, who: str) -> None:
        self.client = client
        self.lock = f"{LOCK_PREFIX}{name}.{alias}"
        self.who = who

    def __enter__(self) -> None:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        delay = 0.02
        while True:
            try:
                mlflow_registry.create_registered_model(
                    self.client, self.lock, tags={"nbmlops.lock": "true", "nbmlops.lock.at": str(time.time()),
                                     "nbmlops.lock.by": self.who},
                    description="nbmlops: a promotion in progress holds this lock; it is deleted when done",
                )
                return
            except RecordRejected as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            self._break_if_stale()
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"another promotion has held {self.lock} for over {LOCK_TIMEOUT_S:.0f} s; try again later"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _break_if_stale(self) -> None:
        try:
            held = mlflow_registry.get_registered_model(self.client, self.lock)
            since = float(held.tags.get("nbmlops.lock.at", "0"))
        except (RecordRejected, ValueError):
            return
        if time.time() - since > LOCK_STALE_S:
            self._delete()

    def _delete(self) -> None:
        try:
            mlflow_registry.delete_registered_model(self.client, self.lock)
        except RecordRejected:
            pass  # already gone

    def __exit__(self, *exc: object) -> None:
        self._delete()

