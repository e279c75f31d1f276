"""``bench run --mlflow URI``: a finished run, logged to an MLflow tracking server.

Optional (``pip install 'bench[mlflow]'``). The run folder is the record; this copies it
into MLflow's model, once the run has finished (and again, as a new parent run, after a
``--resume`` that changed it):

* one **parent run** per bench run (its name), tagged ``bench.data_hash``,
  ``bench.split_seed``, ``bench.run_dir`` and ``bench.version``, with the configuration as
  parameters, the recommended backbone's headline metrics, and as artifacts the
  leaderboard, the report (Markdown, HTML, figures), the split and the export;
* a **nested run per backbone** (per backbone and outer fold under ``--cv``; the CV
  estimates on the backbone's run) with its best hyperparameters and test (or held-out
  fold) metrics;
* a **nested run per trial** under it with the trial's hyperparameters and its per-epoch
  metrics (``step`` = epoch) from ``bench_trial.json``.

The server is checked before any training (:func:`check_server`): a server that is down
or an MLflow that is not installed stops ``bench run`` with one line (exit 2).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

from bench.errors import BenchError
from bench.runfolder import GROUPS_CSV, LEADERBOARD_CSV, LEADERBOARD_JSON, RUN_JSON, SPLIT_JSON
from bench.schema import is_floor

log = logging.getLogger(__name__)

#: Seconds the server check waits for an answer.
CHECK_TIMEOUT = 10


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise BenchError("--mlflow needs MLflow: pip install 'bench[mlflow]' (or leave out --mlflow)") from None
    return mlflow


def check_server(uri: str) -> None:
    """One line (BenchError) unless the tracking server at ``uri`` answers."""
    mlflow = _mlflow()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(CHECK_TIMEOUT))
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # connection refused, DNS, HTTP errors: all mean "not usable"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it "
                         "(e.g. `mlflow server --host 127.0.0.1 --port 5000`) or leave out --mlflow") from None


def _number(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _metrics(row: dict, prefixes: tuple[str, ...] = ("test_", "cv_")) -> dict[str, float]:
    """Numeric ``test_*`` / ``cv_*`` values of a result row, as MLflow metrics."""
    out = {}
    for key, value in row.items():
        if key.startswith(prefixes) and not isinstance(value, (list, dict, bool)):
            number = _number(value)
            if number is not None:
                out[key] = number
    for key in ("val_objective", "search_seconds", "latency_ms_b1", "latency_ms_b32"):
        if _number(row.get(key)) is not None:
            out[key] = _number(row[key])
    return out


def _params(values: dict) -> dict[str, str]:
    """Values as MLflow parameters (text, at most 500 characters; lists comma-joined)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        if value is not None and not isinstance(value, dict):
            out[key] = str(value)[:500]
    return out


def _log_trials(client, experiment_id: str, parent_id: str, tuner_dir: Path, tags: dict) -> int:
    """One nested run per trial folder of ``tuner_dir``: hyperparameters and per-epoch metrics."""
    from mlflow.entities import Metric, Param

    from bench.search.tuner import trial_hyperparameters

    count = 0
    for trial_dir in sorted(tuner_dir.glob("trial_*")):
        record_file, history_file = trial_dir / "trial.json", trial_dir / "bench_trial.json"
        if not record_file.is_file():
            continue
        record = json.loads(record_file.read_text())
        values = trial_hyperparameters(record.get("hyperparameters", {}).get("values", {}))
        run = client.create_run(experiment_id, run_name=trial_dir.name,
                                tags={**tags, "mlflow.parentRunId": parent_id, "bench.level": "trial",
                                      "bench.trial_status": record.get("status", "")})
        history = json.loads(history_file.read_text()).get("history", {}) if history_file.is_file() else {}
        metrics = [Metric(key, float(v), 0, step) for key, series in history.items()
                   for step, v in enumerate(series) if _number(v) is not None]
        params = [Param(k, v) for k, v in _params(values).items()]
        for start in range(0, max(len(metrics), 1), 900):  # MLflow takes at most 1000 entities a batch
            client.log_batch(run.info.run_id, metrics=metrics[start:start + 900], params=params if start == 0 else [])
        client.set_terminated(run.info.run_id, "FINISHED" if record.get("status") == "COMPLETED" else "FAILED")
        count += 1
    return count


def log_run(uri: str, run_dir: Path, reports_dir: Path | None = None, experiment: str = "bench") -> str:
    """Log the finished run folder ``run_dir`` (and its report under ``reports_dir``) to the
    server at ``uri``; returns the parent run's id. A parent run with the same leaderboard
    (sha256) already logged from this folder is reused, not duplicated."""
    mlflow = _mlflow()
    from mlflow.entities import Metric, Param

    from bench.runfolder import read_run

    run = read_run(run_dir)
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    board_sha = hashlib.sha256(run.leaderboard_json.read_bytes()).hexdigest()
    existing = client.search_runs([experiment_id], filter_string=(
        f"tags.`bench.level` = 'run' and tags.`bench.run_dir` = '{run.path.resolve()}' "
        f"and tags.`bench.leaderboard_sha256` = '{board_sha}'"))
    if existing:
        log.info(f"MLflow: run {run.name} is already logged at {uri} (run id {existing[0].info.run_id})")
        return existing[0].info.run_id
    config = run.config
    tags = {"bench.data_hash": str(run.run.get("data_hash")), "bench.split_seed": str(run.split.get("seed", config.get("seed"))),
            "bench.run_dir": str(run.path.resolve()), "bench.version": str(run.run.get("bench_version")),
            "bench.leaderboard_sha256": board_sha}
    parent = client.create_run(experiment_id, run_name=run.name, tags={**tags, "bench.level": "run"})
    pid = parent.info.run_id
    client.log_batch(pid, params=[Param(k, v) for k, v in _params(config).items()])
    ranked = run.ranked()
    if ranked:
        best = ranked[0]
        client.set_tag(pid, "bench.recommended", str(best.get("backbone")))
        client.log_batch(pid, metrics=[Metric(k, v, 0, 0) for k, v in _metrics(best).items()])
    n_trials = 0
    for row in run.leaderboard:
        name = str(row.get("backbone"))
        level = "floor" if is_floor(row) else "backbone"  # a floor baseline's row (bench.evaluate.floor)
        child = client.create_run(experiment_id, run_name=name, tags={**tags, "mlflow.parentRunId": pid,
                                                                       "bench.backbone": name, "bench.level": level})
        hp = {k[3:]: v for k, v in row.items() if k.startswith("hp_")}
        client.log_batch(child.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in _metrics(row).items()],
                         params=[Param(k, v) for k, v in _params({**hp, "status": row.get("status"),
                                                                   "rank": row.get("rank")}).items()])
        n_trials += _log_trials(client, experiment_id, child.info.run_id, run.backbone(name).tuner, tags)
        for search in run.fold_searches(name):  # --cv: one nested run per outer fold
            fold_row = search.result() or {}
            where = search.path.parent.name
            fold = client.create_run(experiment_id, run_name=f"{name} {where}",
                                     tags={**tags, "mlflow.parentRunId": child.info.run_id, "bench.level": "fold",
                                           "bench.fold": where})
            client.log_batch(fold.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in _metrics(fold_row).items()])
            n_trials += _log_trials(client, experiment_id, fold.info.run_id, search.tuner, tags)
            client.set_terminated(fold.info.run_id)
        client.set_terminated(child.info.run_id, "FINISHED" if row.get("status") == "ok" else "FAILED")
    for name in (LEADERBOARD_CSV, LEADERBOARD_JSON, SPLIT_JSON, RUN_JSON, GROUPS_CSV):
        if (run.path / name).is_file():
            client.log_artifact(pid, str(run.path / name))
    report = Path(reports_dir or config.get("reports") or "reports") / run.path.name
    if report.is_dir():
        client.log_artifacts(pid, str(report), artifact_path="report")
    for export in sorted((run.path / "export").glob("*")) if (run.path / "export").is_dir() else []:
        client.log_artifacts(pid, str(export), artifact_path=f"export/{export.name}")
    client.set_terminated(pid)
    floor = sum(1 for row in run.leaderboard if is_floor(row))
    log.info(f"MLflow: logged run {run.name} to {uri} (parent run {pid}, {len(run.leaderboard) - floor} backbones, "
             f"{floor} floor baselines, "
             f"{n_trials} trials)")
    return pid
