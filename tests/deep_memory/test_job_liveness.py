"""Whether a Deep Memory job is still running rests on a lease the kernel ends at death, not on PIDs.

A record says ``pending``/``running``; it reads so only while a live holder
keeps the job's lease. A PID number proves nothing: after a container restart
or when PID 1 or 2 exist, a dead job's PID is someone else's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict

import pytest

import tensordb
from tensordb.deep_memory.jobs import FAILED, JOB_PREFIX, PENDING, RUNNING, JobRecord, JobStore, new_job_id
from tensordb.storage import open_store

#: Job leases on a local disk (flock) and on S3 (heartbeat objects, ObjectLeases).
ON_DISK = pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)


@pytest.fixture
def path(vs_path):
    tensordb.empty(vs_path).close()
    return vs_path


def save_record(path: str, status: str, owner: str) -> str:
    """Write a job record as a process that is gone would have left it."""
    job_id = new_job_id()
    ds = tensordb.load(path)
    record = JobRecord(id=job_id, status=status, created=time.time(), commit_id=None, n_queries=3, owner=owner)
    ds.put_attachment(JOB_PREFIX + job_id, asdict(record))
    ds.close()
    return job_id


def status_of(path: str, job_id: str) -> JobRecord:
    return JobStore(tensordb.load(path, read_only=True)).load(job_id)


@ON_DISK
@pytest.mark.parametrize("owner", [f"{os.getpid()}:deadbeef", "1:deadbeef", "2:deadbeef"])
@pytest.mark.parametrize("status", [PENDING, RUNNING])
def test_a_job_whose_pid_now_belongs_to_a_live_process_reads_failed(path, owner, status):
    job_id = save_record(path, status, owner)
    record = status_of(path, job_id)
    assert record.status == FAILED
    assert record.error.startswith("interrupted")
    assert record.owner == owner  # kept for information


# Local only: the kernel ends a flock lease the moment its holder dies; an S3 lease ends ttl (30 s) after its
# last heartbeat, which tests/storage covers with a fake clock.
@pytest.mark.parametrize("vs_path", ["local"], indirect=True)
def test_a_job_leased_by_a_live_process_reads_running_until_it_is_killed(path):
    job_id = save_record(path, RUNNING, "999999:cafecafe")
    code = textwrap.dedent(f"""
        import time
        from tensordb.storage import LocalStore
        lease = LocalStore({path!r}).hold_lease({JOB_PREFIX + job_id!r})
        print("held", flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert status_of(path, job_id).status == RUNNING
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert status_of(path, job_id).status == FAILED


@ON_DISK
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the target fails on purpose
def test_the_running_thread_holds_the_lease_and_drops_it_when_it_ends_even_on_failure(path):
    ds = tensordb.load(path)
    jobs = JobStore(ds)
    record = JobRecord(id=new_job_id(), status=PENDING, created=time.time(), commit_id=None, n_queries=3)
    jobs.save(record)
    lease = JOB_PREFIX + record.id
    outside = open_store(path)
    # Between save and start the job is already leased: no reader may see it as dead.
    assert outside.lease_held(lease)
    assert status_of(path, record.id).status == PENDING
    go = threading.Event()

    def target(stop):
        assert go.wait(30)
        raise RuntimeError("training blew up")

    jobs.start(record.id, target)
    assert outside.lease_held(lease) and status_of(path, record.id).status == PENDING
    go.set()
    assert jobs.wait(record.id, 30)
    assert not outside.lease_held(lease)
    assert status_of(path, record.id).status == FAILED
    assert jobs.load(record.id).status == FAILED
    ds.close()


@ON_DISK
def test_a_job_run_to_completion_reads_completed(path):
    ds = tensordb.load(path)
    jobs = JobStore(ds)
    record = JobRecord(id=new_job_id(), status=PENDING, created=time.time(), commit_id=None, n_queries=3)
    jobs.save(record)

    def target(stop):
        record.status = RUNNING
        jobs.save(record)
        record.status = "completed"
        jobs.save(record)

    jobs.start(record.id, target)
    assert jobs.wait(record.id, 30)
    assert jobs.load(record.id).status == "completed"
    assert not open_store(path).lease_held(JOB_PREFIX + record.id)
    ds.close()
