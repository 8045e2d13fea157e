"""The preemption watcher: its decisions, and its loop driven by a fake gcloud."""

from collections import deque

import pytest

from launch import catalog
from launch.common import Completed, LaunchError
from launch.tpu_vm import Flow, Job, Tpu, WatchPolicy, WatchState, decide, normalize_state, watch

POLICY = WatchPolicy(max_failures=2, max_recreations=3, max_unknown=2, max_create_failures=2)


@pytest.mark.parametrize("state, ws, action", [
    ("NOT_FOUND", WatchState(), "create"),
    ("NOT_FOUND", WatchState(create_failures=2), "give_up"),
    ("CREATING", WatchState(), "wait"),
    ("REPAIRING", WatchState(setup_done=True), "wait"),
    ("READY", WatchState(), "setup"),
    ("READY", WatchState(setup_done=True), "run"),
    ("READY", WatchState(setup_done=True, last_rc=1, failures=1), "run"),
    ("READY", WatchState(setup_done=True, last_rc=1, failures=2), "give_up"),
    ("READY", WatchState(setup_done=True, last_rc=0), "finish"),
    ("PREEMPTED", WatchState(setup_done=True, last_rc=255), "recreate"),
    ("TERMINATED", WatchState(), "recreate"),
    ("PREEMPTED", WatchState(recreations=3), "give_up"),
    ("STOPPED", WatchState(), "give_up"),
    ("UNKNOWN", WatchState(unknown=1), "wait"),
    ("UNKNOWN", WatchState(unknown=2), "give_up"),
])
def test_decide(state, ws, action):
    assert decide(state, ws, POLICY) == action


def test_queued_resource_states_map_onto_vm_states():
    assert normalize_state("ACTIVE\n", queued=True) == "READY"
    assert normalize_state("SUSPENDED", queued=True) == "PREEMPTED"
    assert normalize_state("WAITING_FOR_RESOURCES", queued=True) == "CREATING"
    assert normalize_state("FAILED", queued=True) == "TERMINATED"
    assert normalize_state("", queued=False) == "UNKNOWN"


class FakeGcloud:
    """Answers describe from a script of states and ssh runs from a script of exit codes."""

    dry_run = False

    def __init__(self, states, run_codes):
        self.states = deque(states)
        self.run_codes = deque(run_codes)
        self.calls: list[str] = []
        self.notes: list[str] = []

    def _verb(self, argv):
        return " ".join(argv[3:5])

    def run(self, argv, *, capture=False, check=True, what=None):
        verb = self._verb(argv)
        if verb.endswith("describe"):
            state = self.states.popleft()
            self.calls.append(f"describe->{state}")
            if state == "NOT_FOUND":
                return Completed(argv, 1, "", "ERROR: (gcloud) NOT_FOUND: Resource not found")
            return Completed(argv, 0, state + "\n")
        self.calls.append(verb)
        return Completed(argv, 0)

    def stream(self, argv):
        rc = self.run_codes.popleft()
        (command,) = [a for a in argv if a.startswith("--command=")]
        resume = command.endswith("--resume")
        self.calls.append(f"run{' --resume' if resume else ''}->{rc}")
        return rc, [f"[launch.worker] process 0/1 on h: exit {rc}"] if rc in (0, 1) else []

    def parallel(self, commands):
        raise AssertionError("not a sweep")

    def note(self, message):
        self.notes.append(message)


def make_flow(runner, queued=False):
    tpu = Tpu("w", "us-central2-b", catalog.tpu_type("v4-8"), "tpu-ubuntu2204-base",
              queued=queued)
    return Flow(tpu, runner, Job(("collapse", "--preset", "paper"), "w"), ref="v1",
                repo="https://example.com/sparsejax.git", sleep=lambda s: None, poll_s=0)


def test_watch_recreates_a_preempted_vm_and_resumes():
    runner = FakeGcloud(
        states=["NOT_FOUND", "READY", "READY", "PREEMPTED", "CREATING", "READY", "READY", "READY"],
        run_codes=[255, 0])
    assert watch(make_flow(runner), POLICY) == 0
    assert runner.calls == [
        "describe->NOT_FOUND", "tpu-vm create",
        "describe->READY", "tpu-vm ssh",             # setup
        "describe->READY", "run->255",               # ssh lost mid-run ...
        "describe->PREEMPTED", "tpu-vm delete", "tpu-vm create",  # ... because it was preempted
        "describe->CREATING",
        "describe->READY", "tpu-vm ssh",             # setup again on the new disk
        "describe->READY", "run --resume->0",
        "describe->READY", "tpu-vm scp", "tpu-vm delete",  # fetch, delete
    ]
    assert any("no --bucket" in n for n in runner.notes)


def test_watch_gives_up_on_a_run_that_fails_on_a_healthy_vm():
    runner = FakeGcloud(states=["READY"] * 4, run_codes=[1, 1])
    with pytest.raises(LaunchError, match="failed 2 time\\(s\\) on a healthy VM .*a bug"):
        watch(make_flow(runner), POLICY)
    assert runner.calls == ["describe->READY", "tpu-vm ssh", "describe->READY", "run->1",
                            "describe->READY", "run --resume->1", "describe->READY"]


def test_watch_gives_up_after_too_many_preemptions_and_on_stopped():
    runner = FakeGcloud(states=["PREEMPTED"] * 4, run_codes=[])
    with pytest.raises(LaunchError, match="lost 3 time"):
        watch(make_flow(runner), POLICY)
    assert runner.calls.count("tpu-vm create") == 3
    with pytest.raises(LaunchError, match="stopped outside the watcher"):
        watch(make_flow(FakeGcloud(states=["STOPPED"], run_codes=[])), POLICY)


def test_watch_a_queued_resource_through_suspension():
    runner = FakeGcloud(
        states=["ACTIVE", "ACTIVE", "SUSPENDED", "ACCEPTED", "PROVISIONING", "ACTIVE", "ACTIVE",
                "ACTIVE", "ACTIVE"],
        run_codes=[143, 0])
    assert watch(make_flow(runner, queued=True), POLICY) == 0
    assert runner.calls == [
        "describe->ACTIVE", "tpu-vm ssh", "describe->ACTIVE", "run->143",
        "describe->SUSPENDED", "queued-resources delete", "queued-resources create",
        "describe->ACCEPTED", "describe->PROVISIONING", "describe->ACTIVE",  # create waits
        "describe->ACTIVE", "tpu-vm ssh", "describe->ACTIVE", "run --resume->0",
        "describe->ACTIVE", "tpu-vm scp", "queued-resources delete"]


def test_unreadable_state_is_retried_then_reported():
    class Broken(FakeGcloud):
        def run(self, argv, *, capture=False, check=True, what=None):
            return Completed(argv, 1, "", "ERROR: (gcloud) permission denied")

    runner = Broken([], [])
    with pytest.raises(LaunchError, match="could not be read 2 time"):
        watch(make_flow(runner), POLICY)
    assert any("permission denied" in n for n in runner.notes)


def test_watch_retries_a_failed_creation():
    class Stockout(FakeGcloud):
        creates = 0

        def run(self, argv, *, capture=False, check=True, what=None):
            if self._verb(argv) == "tpu-vm create":
                Stockout.creates += 1
                if Stockout.creates <= 1:
                    self.calls.append("tpu-vm create->failed")
                    raise LaunchError("creating the TPU failed with exit code 1: no capacity")
            return super().run(argv, capture=capture, check=check, what=what)

    runner = Stockout(states=["NOT_FOUND", "NOT_FOUND", "READY", "READY", "READY"], run_codes=[0])
    assert watch(make_flow(runner), POLICY) == 0
    assert runner.calls[:4] == ["describe->NOT_FOUND", "tpu-vm create->failed",
                                "describe->NOT_FOUND", "tpu-vm create"]
    Stockout.creates = -100  # every creation fails from now on
    with pytest.raises(LaunchError, match="creating it failed 2 time"):
        watch(make_flow(Stockout(states=["NOT_FOUND"] * 3, run_codes=[])), POLICY)
