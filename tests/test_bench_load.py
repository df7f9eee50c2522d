"""The load benchmark: its accounting (pure functions over the offers customers saw and the
simulator's ledger), its report and targets on hand-made runs, and one tiny run over the whole
mesh proving that it works and that its report adds up. Never a timed test: nothing here
asserts how fast anything was."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from osago_bench.accounting import (
    Issued,
    Seen,
    account_offers,
    added_lags,
    detection_delays,
    lag_legs,
    percentile,
    requests_per_application,
)
from osago_bench.baselines import StreamReader, open_fanout, stream_server
from osago_bench.cli import load_config, run_load_command
from osago_bench.load import BenchError, LoadConfig, apply_nice, mesh_options, run_load
from osago_bench.load_report import Measured, ProcessCost, build_report, passed, table
from osago_bench.loadgen import Generator, LoadPlan
from osago_bench.procstat import cpu_seconds, nice_of, peak_rss_kib, restore_nice, sample_group, server_processes
from osago_bench.profiles import frame_name, summarise, waits
from osago_cli.main import _parser
from tests.conftest import load_example, start_mesh

T0 = 1_780_000_000.0  # some wall-clock second


def issued(reference: str, insurer: str, offer: str, ready: float = T0, at: float = T0 + 0.5) -> Issued:
    return Issued(reference, insurer, offer, ready, at)


def seen(request: str, insurer: str, offer: str, arrived: float = T0 + 1.0, obtained: float | None = T0 + 0.9) -> Seen:
    return Seen(request, insurer, offer, arrived, obtained)


LEDGER = [
    issued("r1", "alfa", "A1"),
    issued("r1", "ingos", "I1"),
    issued("r2", "alfa", "A2"),
    issued("r2", "ingos", "I2"),
    issued("other", "alfa", "X9"),  # another session's: never expected of r1, r2
]


# --- accounting -----------------------------------------------------------------------------------


def test_every_offer_delivered_once_is_neither_lost_duplicated_nor_invented() -> None:
    account = account_offers([seen("r1", "alfa", "A1"), seen("r1", "ingos", "I1")], LEDGER, {"r1"})
    assert (account.expected, account.delivered, account.lost, account.duplicated, account.invented) == (2, 2, 0, 0, 0)


def test_an_offer_dropped_on_the_way_is_reported_lost() -> None:
    delivered = [seen("r1", "alfa", "A1"), seen("r1", "ingos", "I1"), seen("r2", "alfa", "A2")]  # I2 dropped
    account = account_offers(delivered, LEDGER, {"r1", "r2"})
    assert (account.expected, account.delivered, account.lost) == (4, 3, 1)
    assert account.lost_examples == [("r2", "ingos", "I2")]
    assert (account.duplicated, account.invented) == (0, 0)


def test_an_offer_sent_twice_is_reported_duplicated_and_thrice_twice() -> None:
    twice = [seen("r1", "alfa", "A1"), seen("r1", "alfa", "A1", arrived=T0 + 2), seen("r1", "ingos", "I1")]
    assert account_offers(twice, LEDGER, {"r1"}).duplicated == 1
    thrice = [*twice, seen("r1", "alfa", "A1", arrived=T0 + 3)]
    account = account_offers(thrice, LEDGER, {"r1"})
    assert (account.duplicated, account.lost, account.delivered) == (2, 0, 2)


def test_an_offer_not_in_the_ledger_is_reported_invented() -> None:
    made_up = [seen("r1", "alfa", "A1"), seen("r1", "ingos", "I1"), seen("r1", "alfa", "FAKE")]
    account = account_offers(made_up, LEDGER, {"r1"})
    assert (account.invented, account.invented_examples) == (1, [("r1", "alfa", "FAKE")])
    # Another session's offer delivered to this one is invented too: it was not issued for r1.
    crossed = account_offers([seen("r1", "alfa", "X9")], LEDGER, {"r1"})
    assert (crossed.invented, crossed.lost) == (1, 2)


def test_the_added_lag_splits_at_the_moment_the_aggregator_logged_the_offer() -> None:
    delivered = [
        Seen("r1", "alfa", "A1", arrived=T0 + 1.050, obtained=T0 + 1.000, logged=T0 + 1.010),
        Seen("r1", "ingos", "I1", arrived=T0 + 2.300, obtained=T0 + 2.000, logged=T0 + 2.200),
    ]
    upstream, downstream = lag_legs(delivered)
    assert [round(x, 3) for x in upstream] == [0.01, 0.2]
    assert [round(x, 3) for x in downstream] == [0.04, 0.1]


def test_lag_and_detection_delay_count_each_offer_at_its_first_arrival() -> None:
    delivered = [
        seen("r1", "alfa", "A1", arrived=T0 + 1.030, obtained=T0 + 1.000),
        seen("r1", "alfa", "A1", arrived=T0 + 5.000, obtained=T0 + 1.000),  # a duplicate, later
        seen("r1", "ingos", "I1", arrived=T0 + 2.100, obtained=T0 + 2.000),
        seen("r1", "ingos", "OLD", arrived=T0 + 3.0, obtained=None),  # a quote without obtained_at
    ]
    assert sorted(round(x, 3) for x in added_lags(delivered)) == [0.03, 0.1]
    ledger = [issued("r1", "alfa", "A1", ready=T0 + 0.4), issued("r1", "ingos", "I1", ready=T0 + 1.0)]
    delays = detection_delays(delivered, ledger)
    assert {k: [round(v, 3) for v in vs] for k, vs in delays.items()} == {"alfa": [0.6], "ingos": [1.0]}


def test_requests_per_application_add_creates_polls_and_callbacks_of_the_sessions_asked_about() -> None:
    applications = [
        {"reference": "r1", "insurer_id": "alfa", "creates": 1, "polls": 2, "callbacks": 0},
        {"reference": "r2", "insurer_id": "alfa", "creates": 2, "polls": 3, "callbacks": 0},  # a replayed create
        {"reference": "r1", "insurer_id": "ingos", "creates": 1, "polls": 0, "callbacks": 0},
        {"reference": "r1", "insurer_id": "sovcom", "creates": 1, "polls": 0, "callbacks": 2},  # one retried
        {"reference": "bare-1", "insurer_id": "alfa", "creates": 1, "polls": 9, "callbacks": 0},  # not ours
    ]
    assert requests_per_application(applications, {"r1", "r2"}) == {"alfa": (2, 8), "ingos": (1, 1), "sovcom": (1, 3)}


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        95.0,
        99.0,
        100.0,
    )
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


# --- /proc and profiles ---------------------------------------------------------------------------


def test_cpu_seconds_add_user_and_system_time_even_with_spaces_in_the_command(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "42").mkdir()
    fields = ["S", "1", "42", "42", "0", "-1", "4194560", "10", "0", "0", "0", str(3 * ticks), str(ticks)]
    (tmp_path / "42" / "stat").write_text(f"42 (osago (gate way)) {' '.join(fields)} 0 0 20 0 9\n")
    (tmp_path / "42" / "status").write_text("Name:\tpython\nVmPeak:\t 9000 kB\nVmHWM:\t   81234 kB\n")
    assert cpu_seconds(42, tmp_path) == 4.0  # 3 s user + 1 s system
    assert peak_rss_kib(42, tmp_path) == 81234


def fake_process(proc: Path, pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    (proc / str(pid) / "fd").mkdir(parents=True)
    fields = ["S", str(ppid), "1", "1", "0", "-1", "0", "0", "0", "0", "0"]
    fields += [str(utime * ticks), str(stime * ticks), str(cutime * ticks), str(cstime * ticks)]
    (proc / str(pid) / "stat").write_text(f"{pid} (postgres) {' '.join(fields)} 20 0 1\n")
    (proc / str(pid) / "status").write_text(f"VmHWM:\t{pid * 10} kB\n")


def test_a_server_is_found_by_its_port_and_measured_with_its_children(tmp_path: Path) -> None:
    fake_process(tmp_path, 100, 1, utime=5, stime=1, cutime=3, cstime=1)  # the postmaster
    fake_process(tmp_path, 101, 100, utime=2, stime=0)  # a connection's backend
    fake_process(tmp_path, 102, 100, utime=1, stime=1)
    fake_process(tmp_path, 200, 1, utime=9, stime=9)  # something else
    (tmp_path / "100" / "fd" / "3").symlink_to("socket:[777]")
    (tmp_path / "200" / "fd" / "3").symlink_to("socket:[888]")
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    listening = "   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   104        0 777\n"
    (tmp_path / "net" / "tcp").write_text(header + listening)  # port 0x1538 = 5432
    assert server_processes(5432, tmp_path) == [100, 101, 102]
    assert server_processes(6379, tmp_path) == []
    group = sample_group([100, 101, 102], tmp_path)
    # The postmaster's own 6 s and its exited children's 4 s, then its live children's 2 + 2 s.
    assert group is not None and (group.cpu_s, group.peak_rss_kib) == (14.0, 1020)


def test_a_profile_summary_leaves_idle_samples_out_and_charges_each_busy_one_to_a_component(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "aggregator.txt"
    loop = "run (asyncio/base_events.py:600)"
    raw.write_text(
        f"{loop};append (aggregator/writer.py:52);_send (grpc/aio/_call.py:80);sendmsg (libc.so.6) 6\n"
        f"{loop};append (aggregator/writer.py:55) 3\n"
        f"{loop};gc_collect_main (libpython3.11.so.1.0) 1\n"
        f"{loop};select (selectors.py:469);epoll_wait (libc.so.6) 90\n"  # waiting: idle
        # A thread pool's worker waiting on its queue: libc's frames without symbols.
        "_worker (concurrent/futures/thread.py:81);_queue_SimpleQueue_get (_queuemodule.c.h:177);"
        "PyThread_acquire_lock_timed (libpython3.11.so.1.0);0x7fad546aed90 (libc.so.6);0x7fad546a3f16 (libc.so.6) 40\n"
    )
    summary = summarise(raw)
    assert (summary["busy_samples"], summary["idle_samples"]) == (10, 130)
    assert summary["components_pct"] == [
        ["gRPC (C core, Cython)", 60.0],
        ["our code: aggregator", 30.0],
        ["garbage collector", 10.0],
    ]
    assert summary["self_pct"][0] == ["sendmsg (libc.so.6)", 60.0]
    assert summary["ours_inclusive_pct"] == [["append (aggregator/writer.py)", 90.0]]
    assert frame_name("f (/usr/lib/python3.11/site-packages/grpc/aio/_server.py:12)") == "f (aio/_server.py)"


def test_a_lock_s_wait_is_idle_only_where_libc_s_unnamed_frames_are_all_inside_it() -> None:
    lock = "PyThread_acquire_lock_timed (libpython3.11.so.1.0)"
    assert waits(["f (x.py:1)", lock, "0x7fad546aed90 (libc.so.6)", "0x7fad546a3f16 (libc.so.6)"])
    assert not waits(["f (x.py:1)", lock, "memcpy (libc.so.6)"])  # working inside it
    assert not waits(["f (x.py:1)", "0x7fad546a3f16 (libc.so.6)"])  # an unnamed frame alone says nothing
    assert waits(["f (x.py:1)", "futex_wait (libc.so.6)"])


# --- the report, from a hand-made run ---------------------------------------------------------------


def session(
    request_id: str, quotes: list[list[Any]], *, elapsed: float = 20.0, code: str = "", **extra: Any
) -> dict[str, Any]:
    return {
        "customer": 0,
        "start": T0,
        "request_id": request_id,
        "elapsed": elapsed,
        "first_offer": 1.0 if quotes else None,
        "finished": "" if code else "completed",
        "finished_after": None if code else elapsed,
        "code": code,
        "retry_after_s": None,
        "events": len(quotes) + 2,
        "quotes": quotes,
        "failures": {},
        **extra,
    }


def measured(sessions: list[dict[str, Any]], costs: list[ProcessCost] | None = None) -> Measured:
    config = LoadConfig(customers=3, hold_s=10, insurers=2).to_json()
    ledger = [
        {
            "reference": o.reference,
            "insurer_id": o.insurer_id,
            "offer_id": o.offer_id,
            "ready_at": "2026-05-28T10:00:00+00:00",
            "issued_at": "2026-05-28T10:00:01+00:00",
        }
        for o in LEDGER
    ]
    return Measured(
        config=config,
        machine={"cores": 2, "cpu_model": "test"},
        started_at="now",
        window_s=10.0,
        generators=[{"sessions": sessions, "sized_bytes": 1000, "sized_events": 10, "loop_lag_ms": {}}],
        costs=costs or [ProcessCost("aggregator", 1.0, 1024), ProcessCost("gateway alfa", 2.0, 1024)],
        sim_requests=100,
        ledger_offers=ledger,
        applications=[{"reference": "r1", "insurer_id": "alfa", "creates": 1, "polls": 1}],
    )


def test_the_report_counts_a_dropped_and_a_doubled_offer_and_every_kind_of_attempt() -> None:
    run = measured(
        [
            session(
                "r1",
                [["alfa", "A1", T0 + 1, T0 + 0.99], ["alfa", "A1", T0 + 2, T0 + 0.99], ["ingos", "I1", T0 + 1, None]],
                started_after=0.25,
            ),
            # I2 never came; finished late, having waited 9 s to be admitted
            session("r2", [["alfa", "A2", T0 + 1, T0 + 0.98]], elapsed=60.5, started_after=9.0),
            session("", [], code="RESOURCE_EXHAUSTED", elapsed=0.01, retry_after_s=2.0),
            session("r3", [], code="DEADLINE_EXCEEDED", elapsed=60.0, detail="Deadline Exceeded"),
            # SessionFinished in time, but the call's final status came after its deadline.
            session("r4", [], code="DEADLINE_EXCEEDED", finished="completed", finished_after=59.9, elapsed=60.0),
        ]
    )
    report = build_report(run)
    s, o = report["sessions"], report["offers"]
    assert (s["attempted"], s["started"], s["finished"], s["finished_within_limit"], s["shed"]) == (5, 4, 3, 2, 1)
    assert s["failed_by_code"] == {"DEADLINE_EXCEEDED": 1}
    assert s["finished_then_failed_by_code"] == {"DEADLINE_EXCEEDED": 1}
    assert s["failed_details"] == {"DEADLINE_EXCEEDED": {"Deadline Exceeded": 1}}  # r4 finished: not a failure
    # Only the calls that saw SessionStarted say when: nearest rank of [0.25, 9.0].
    assert s["time_to_started_s"] == {"p50": 0.25, "p99": 9.0}
    assert s["shed_answered_after_s"] == {"p50": 0.01, "p99": 0.01}
    assert s["shed_retry_after_s"] == {"p50": 2.0, "p99": 2.0}
    assert "the shed were answered after p50 0.01 s p99 0.01 s, told to retry after p50 2.00 s" in table(report)
    assert "DEADLINE_EXCEEDED said: 'Deadline Exceeded' ×1" in table(report)
    assert (o["expected"], o["delivered"], o["lost"], o["duplicated"], o["invented"]) == (4, 3, 1, 1, 0)
    assert report["added_lag_ms"]["max"] == pytest.approx(20.0)  # 1.00 − 0.98 s
    assert report["sessions"]["slowest"]["seconds"] == 60.5
    assert report["cpu"]["services_ms_per_session"] == 750.0  # 3 s over 4 sessions started
    assert report["cpu"]["aggregator_us_per_event"] == pytest.approx(1e6 / 14)  # 1 s over 5 + 3 + 2 + 2 + 2 events
    verdicts = {t["name"]: t["ok"] for t in report["targets"]}
    assert verdicts["offers lost"] is False and verdicts["offers duplicated"] is False
    assert verdicts["offers invented"] is True
    assert not passed(report)
    text = table(report)
    assert "lost 1, duplicated 1, invented 0" in text and "MISS" in text


def test_a_clean_run_passes_the_loss_targets_and_leaves_the_baselines_unmeasured() -> None:
    run = measured(
        [
            session("r1", [["alfa", "A1", T0 + 1, T0 + 0.99], ["ingos", "I1", T0 + 1, T0 + 0.99]]),
            session("r2", [["alfa", "A2", T0 + 1, T0 + 0.99], ["ingos", "I2", T0 + 1, T0 + 0.99]]),
        ]
    )
    report = build_report(run)
    verdicts = {t["name"]: t["ok"] for t in report["targets"]}
    assert verdicts["3 customers: every session finished within 60 s"] is True
    assert verdicts["offers lost"] is True and verdicts["offers duplicated"] is True
    assert verdicts["aggregator CPU per event ÷ bare gRPC's per message"] is None  # no baseline run
    json.dumps(report)  # one JSON document


# --- options --------------------------------------------------------------------------------------


def test_the_command_line_becomes_the_config() -> None:
    args = _parser().parse_args(
        ["bench", "load", "--sessions", "2500", "--insurers", "10", "--duration", "180", "--json", "--pid", "sim=123"]
    )
    config = load_config(args)
    assert (config.customers, config.insurers, config.hold_s, config.ramp_s, config.backend) == (
        2500,
        10,
        180.0,
        30.0,
        "embedded",
    )
    assert config.pids == {"sim": 123} and config.baselines
    with pytest.raises(BenchError, match="--pid"):
        load_config(_parser().parse_args(["bench", "load", "--pid", "sim"]))
    capped = load_config(_parser().parse_args(["bench", "load", "--env", "OSAGO_MAX_SESSIONS=500"]))
    assert capped.mesh_env == {"OSAGO_MAX_SESSIONS": "500"}
    with pytest.raises(BenchError, match="--env"):
        load_config(_parser().parse_args(["bench", "load", "--env", "PATH=/tmp"]))


def test_nice_values_are_taken_by_role_and_checked() -> None:
    config = load_config(_parser().parse_args(["bench", "load", "--nice", "aggregator=-4", "--nice", "sim=5"]))
    assert config.nice == {"aggregator": -4, "sim": 5}
    assert config.to_json()["nice"] == {"aggregator": -4, "sim": 5}
    for bad in ("aggregator", "aggregator=--4", "sim=²", "sim=1.5"):
        with pytest.raises(BenchError, match="--nice takes ROLE=N"):
            load_config(_parser().parse_args(["bench", "load", "--nice", bad]))
    with pytest.raises(BenchError, match="role"):
        LoadConfig(nice={"envoy": 1}).check()
    with pytest.raises(BenchError, match="-20 to 19"):
        LoadConfig(nice={"sim": 20}).check()
    with pytest.raises(BenchError, match="no backend process"):  # the embedded backend has none
        apply_nice({"backend": 5}, {"sim": [os.getpid()], "aggregator 1": [os.getpid()]})


@pytest.mark.functional
def test_a_nice_value_reaches_every_thread_of_the_processes_of_its_role_and_is_put_back() -> None:
    # Two real processes, each with a second thread started before the nice value is set.
    code = "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); time.sleep(60)"
    sim, gateway = (subprocess.Popen([sys.executable, "-c", code]) for _ in range(2))
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    higher = min(19, ours + 7)  # raising a value needs no privilege
    try:
        tasks = Path(f"/proc/{sim.pid}/task")
        deadline = time.monotonic() + 10
        while len(list(tasks.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(list(tasks.iterdir())) == 2
        before = apply_nice({"sim": higher}, {"sim": [sim.pid], "gateway alfa 1": [gateway.pid]})
        assert sorted(before) == sorted(int(t.name) for t in tasks.iterdir())
        for task in tasks.iterdir():
            assert nice_of(int(task.name), tasks) == higher
        assert nice_of(gateway.pid) == ours  # another role: untouched
        if os.geteuid() == 0:  # putting a value back down is allowed to root only
            restore_nice(before)
            assert all(nice_of(int(task.name), tasks) == ours for task in tasks.iterdir())
    finally:
        for child in (sim, gateway):
            child.kill()
            child.wait()


async def test_the_command_refuses_what_it_cannot_run_before_starting_anything(tmp_path: Path) -> None:
    err_free = io.StringIO()
    missing = _parser().parse_args(["bench", "load", "--file", str(tmp_path / "nothing.json")])
    assert await run_load_command(missing, out=err_free) == 2
    several = _parser().parse_args(["bench", "load", "--aggregators", "2"])  # embedded: one aggregator only
    assert await run_load_command(several, out=err_free) == 2
    assert err_free.getvalue() == ""  # no report


def test_a_running_mesh_needs_both_its_aggregator_and_its_simulator() -> None:
    with pytest.raises(BenchError, match="--target and --sim"):
        LoadConfig(target="127.0.0.1:50050").check()


def test_the_mesh_options_carry_the_benchmarks_and_a_combination_the_mesh_refuses_is_named() -> None:
    options = mesh_options(LoadConfig(insurers=4, time_scale=0.5, aggregators=2, gateway_replicas=2, backend="shared"))
    assert (options.insurers, options.time_scale, options.aggregator_port, options.session_limit_s) == (4, 0.5, 0, 60.0)
    assert (options.aggregators, options.gateway_replicas, options.backend) == (2, 2, "shared")
    with pytest.raises(BenchError, match="shared"):
        mesh_options(LoadConfig(aggregators=2))  # several aggregators share sessions through the shared backend


# --- one tiny run over the whole mesh ------------------------------------------------------------------


@pytest.mark.functional
@pytest.mark.timeout(300)
async def test_a_tiny_run_over_the_whole_mesh_works_and_its_report_adds_up() -> None:
    # 20 customers at 1/50 of real time for a few seconds; the aggregator is capped at 12
    # sessions so that some customers are shed (and come back after the retry delay).
    config = LoadConfig(
        customers=20,
        hold_s=3.0,
        ramp_s=1.0,
        insurers=10,
        time_scale=0.02,
        seed=11,
        fanout_sessions=20,
        mesh_env={"OSAGO_MAX_SESSIONS": "12", "OSAGO_SHED_RETRY_S": "0.2"},
    )
    report = await run_load(config, load_example())
    check_tiny_report(report, fanout_sessions=20)


@pytest.mark.functional
@pytest.mark.timeout(300)
async def test_the_command_prints_the_report_as_json() -> None:
    args = _parser().parse_args(
        [
            *("bench", "load", "--sessions", "8", "--duration", "2", "--ramp", "0.5", "--time-scale", "0.02"),
            *("--seed", "3", "--env", "OSAGO_MAX_SESSIONS=5", "--env", "OSAGO_SHED_RETRY_S=0.2", "--json"),
        ]
    )
    out = io.StringIO()
    code = await run_load_command(args, out=out)
    report = json.loads(out.getvalue())
    assert code == (0 if passed(report) else 1)
    assert report["config"]["mesh_env"] == {"OSAGO_MAX_SESSIONS": "5", "OSAGO_SHED_RETRY_S": "0.2"}
    assert report["sessions"]["customers"] == 8 and report["sessions"]["shed"] > 0


def check_tiny_report(report: dict[str, Any], fanout_sessions: int) -> None:
    s, o, cpu = report["sessions"], report["offers"], report["cpu"]

    # Every attempt is accounted for once: finished, shed, or failed.
    assert s["attempted"] == s["finished"] + s["shed"] + sum(s["failed_by_code"].values())
    assert s["shed"] > 0 and s["started"] >= 20
    # The aggregator's own count of its refusals, by signal: the cap of 12 sessions refused, and
    # nothing refused more than the customers saw refused (the rate limits refuse apart).
    assert set(s["shed_by_signal"]) == {"sessions", "loop_lag", "queue_wait", "adaptive_cap"}
    assert 0 < s["shed_by_signal"]["sessions"] <= sum(s["shed_by_signal"].values()) <= s["shed"]
    assert s["finished_within_limit"] <= s["finished"] <= s["started"]
    assert s["finished"] == s["started"]  # a healthy mesh at this size finishes every session it starts
    assert sum(s["statuses"].values()) == s["finished"]

    # Offers: the ledger's offers for these sessions, each delivered once.
    assert o["expected"] == o["delivered"] + o["lost"]
    assert (o["lost"], o["duplicated"], o["invented"]) == (0, 0, 0)
    assert sum(v["offers"] for v in report["insurers"].values()) == o["delivered"]
    assert set(report["insurers"]) == {
        "alfa",
        "ingos",
        "reso",
        "vsk",
        "sogaz",
        "renins",
        "soglasie",
        "tstrah",
        "sber",
        "maks",
    }
    lag = report["added_lag_ms"]
    assert lag["p50"] is not None and lag["p50"] >= 0
    assert lag["gateway_to_aggregator"]["p50"] is not None and lag["aggregator_to_customer"]["p50"] is not None
    assert report["requests_per_application"] >= 2  # a create and at least one poll

    # CPU: every process measured, the services' share per session from them.
    names = {p["name"] for p in cpu["processes"]}
    assert {"sim", "aggregator 1", "loadgen 1"} <= names and sum(n.startswith("gateway") for n in names) == 10
    by_name = {p["name"]: p["cpu_s"] for p in cpu["processes"]}
    services = sum(v for n, v in by_name.items() if n.startswith(("aggregator", "gateway")))
    assert cpu["services_ms_per_session"] == pytest.approx(services * 1000 / s["started"], abs=0.01)
    assert cpu["events_delivered"] >= s["finished"] * (10 + 2)  # started, an answer per insurer, finished

    # The baselines ran in the same run, and their ratios come from them.
    baselines = report["baselines"]
    assert baselines["grpc"]["messages"] >= cpu["events_delivered"] and baselines["grpc"]["server_cpu_s"] > 0
    assert baselines["fanout"]["sessions"] == fanout_sessions
    assert baselines["fanout"]["requests"] >= fanout_sessions * 10 * 2
    assert baselines["aggregator_event_vs_grpc_message"] == pytest.approx(
        cpu["aggregator_us_per_event"] / baselines["grpc"]["server_us_per_message"], rel=0.01
    )
    assert {t["name"] for t in report["targets"]} >= {"offers lost", "added lag p99", "simulator CPU per HTTP request"}
    assert f"baseline fan-out: {fanout_sessions} sessions" in table(report)
    json.dumps(report)


# --- the load generator and the baselines, in this process ------------------------------------------


@pytest.mark.functional
async def test_the_load_generator_keeps_its_customers_busy_and_notes_what_each_got() -> None:
    async with start_mesh(n=3, time_scale=0.01) as mesh:
        plan = LoadPlan(
            targets=[mesh.target],
            first_customer=0,
            customers=3,
            total_customers=3,
            ramp_s=0.1,
            hold_s=0.5,
            limit_s=20.0,
            channels_per_target=2,
            application=load_example().SerializeToString().hex(),
        )
        generator = Generator(plan)
        await generator.connect()
        await generator.run(time.time())
        await generator.close()
        result = generator.result()
        sessions = result["sessions"]
        assert {r["customer"] for r in sessions} == {0, 1, 2} and len(sessions) >= 3
        assert all(r["finished"] and r["code"] == "" for r in sessions)
        assert all(r["finished_after"] <= r["elapsed"] for r in sessions)
        # What the customers saw is what the simulator issued for their request ids.
        async with mesh.http.get(f"{mesh.sim_url}/_sim/ledger") as response:
            offers = (await response.json())["offers"]
        seen = [Seen(r["request_id"], q[0], q[1], q[2], q[3], q[4]) for r in sessions for q in r["quotes"]]
        issued = [Issued(o["reference"], o["insurer_id"], o["offer_id"], 0.0, 0.0) for o in offers]
        account = account_offers(seen, issued, {r["request_id"] for r in sessions})
        assert account.expected > 0 and (account.lost, account.duplicated, account.invented) == (0, 0, 0)
        assert all(q[3] is not None and q[4] is not None for r in sessions for q in r["quotes"])
        assert result["sized_events"] > 0 and result["loop_lag_ms"]["p50"] is not None


@pytest.mark.functional
async def test_the_bare_grpc_baseline_streams_every_message_asked_for() -> None:
    server, address = await stream_server()
    reader = StreamReader(address, channels=2)
    try:
        await reader.connect()
        assert await reader.read(streams=30, per_stream=7, size=150) == 210
    finally:
        await reader.close()
        await server.stop(0)


@pytest.mark.functional
async def test_the_bare_fan_out_asks_every_insurer_and_counts_every_request_it_makes() -> None:
    async with start_mesh(n=3, time_scale=0.01) as mesh:
        bare = await open_fanout(mesh.sim_url, 3, load_example(), limit_s=20.0)
        try:
            outcome = await bare.run(sessions=4, concurrency=4, spread_s=0.0)
        finally:
            await bare.close()
        assert sum(outcome["outcomes"].values()) == 4 * 3  # every insurer of every session answered
        assert set(outcome["outcomes"]) <= {"offer", "declined", "deadline"}
        # The simulator counted the same requests for these sessions: creates and polls.
        async with mesh.http.get(f"{mesh.sim_url}/_sim/stats") as response:
            applications = (await response.json())["applications"]
        ours = [a for a in applications if a["reference"].startswith(outcome["run_id"])]
        assert len(ours) == 12
        assert outcome["requests"] == sum(a["creates"] + a["polls"] for a in ours)
