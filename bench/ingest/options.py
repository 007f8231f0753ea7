"""The options of the ingest benchmark (bench/ingest/run.py): rates and lengths of the
phases, the publishers, the ingest's tuning, which phases to leave out."""

from __future__ import annotations

import argparse
import os

from report import ISSUE_BURST_RATE, ISSUE_BURST_S, ISSUE_LORAWAN_RATE, ISSUE_RATE

__all__ = ["parse_args"]

_QUICK = {
    "rate": 2_000,
    "seconds": 5.0,
    "burst_rate": 4_000,
    "burst_seconds": 5.0,
    "baseline_seconds": 5.0,
    "sensors": 200,
}
_FULL = {
    "rate": ISSUE_RATE,
    "seconds": 30.0,
    "burst_rate": ISSUE_BURST_RATE,
    "burst_seconds": ISSUE_BURST_S,
    "baseline_seconds": 10.0,
    "sensors": 1_000,
}


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The options; `description` is run.py's docstring (the phases)."""
    parser = argparse.ArgumentParser(
        prog="bench/ingest/run.py",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults in brackets are for a full run; --quick uses smaller ones. "
        "See docs/performance.md for measured figures.",
    )
    full, quick = _FULL, _QUICK
    parser.add_argument("--rate", type=int, help=f"sustained phase, msgs/s [{full['rate']}]")
    parser.add_argument("--seconds", type=float, help=f"sustained phase length [{full['seconds']}]")
    parser.add_argument(
        "--burst-rate", type=int, help=f"burst phase, msgs/s [{full['burst_rate']}]"
    )
    parser.add_argument(
        "--burst-seconds", type=float, help=f"burst phase length [{full['burst_seconds']}]"
    )
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        help="measured phase length of each baseline (plain, naive) after its probe "
        f"[{full['baseline_seconds']}]",
    )
    parser.add_argument(
        "--sensors",
        type=int,
        help=f"bins (sensors) registered and published for [{full['sensors']}]",
    )
    parser.add_argument(
        "--publishers",
        type=int,
        help="publisher processes (default: one per 10,000 msgs/s with raw, per 5,000 with "
        "paho, at least 2)",
    )
    parser.add_argument(
        "--publisher",
        choices=["raw", "paho"],
        default="raw",
        help="publisher client: raw = minimal MQTT 3.1.1 encoder (about 1/10 of paho's CPU per "
        "message, so the load generator leaves the CPUs to the system under test), paho = "
        "paho-mqtt [raw]",
    )
    parser.add_argument(
        "--ingest-instances",
        type=int,
        default=1,
        help="ingest processes; more than 1 share the load through an MQTT v5 shared "
        "subscription (CITYOPS_INGEST_SHARE_GROUP) [1]",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in quick.items()),
    )
    parser.add_argument("--skip-baseline", action="store_true",
                        help="no baseline phases (neither plain nor naive)")
    parser.add_argument("--skip-plain", action="store_true",
                        help="no plain zero-loss baseline (then no ratio)")
    parser.add_argument("--skip-naive", action="store_true", help="no naive baseline")
    parser.add_argument(
        "--probe-rate", type=float,
        help="msgs/s offered in each baseline's 4 s capacity probe [1.5 x --rate, so that a "
        "baseline faster than --rate is not capped by it]",
    )
    parser.add_argument(
        "--skip-lorawan", action="store_true",
        help="no LoRaWAN phases (ChirpStack/The Things Stack uplinks at the sustained rate "
        "and at --lorawan-rate)",
    )
    parser.add_argument(
        "--lorawan-rate", type=int, default=ISSUE_LORAWAN_RATE,
        help=f"uplinks/s of the second LoRaWAN phase [{ISSUE_LORAWAN_RATE}]",
    )
    parser.add_argument(
        "--batch-size", type=int, help="CITYOPS_INGEST_BATCH_SIZE for the ingest [its default]"
    )
    parser.add_argument(
        "--flush-ms", type=int, help="CITYOPS_INGEST_FLUSH_MS for the ingest [its default]"
    )
    parser.add_argument(
        "--receive-maximum",
        type=int,
        help="CITYOPS_INGEST_RECEIVE_MAXIMUM for the ingest [its default]",
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=30.0,
        help="after publishing, stop waiting for rows once none arrived for this long [30]",
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("CITYOPS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL URL allowed to CREATE DATABASE "
        "[$CITYOPS_BENCH_PG or postgresql://postgres@127.0.0.1:5432/postgres]",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with logs")
    args = parser.parse_args(argv)
    base = quick if args.quick else full
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args
