"""The demo report draws finished jobs' pictures and leaves the jobs exactly as they were."""

import hashlib
import pathlib

from apps import report


def _snapshot(job: pathlib.Path) -> dict:
    """Every file under the job dir with its content hash and modification time."""
    return {
        str(p.relative_to(job)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(job.rglob("*"))
        if p.is_file()
    }


def test_report_reads_finished_jobs_read_only(malta_job, avlnet_job, tmp_path):
    malta, _ = malta_job
    avlnet, _ = avlnet_job
    before = {job: _snapshot(job) for job in (malta, avlnet)}

    attention = report.localization_figure({"MALTA": str(malta)}, str(tmp_path / "attention.png"), num_captions=2)
    retrieval = report.retrieval_figure(str(avlnet), str(tmp_path / "retrieval.png"))

    for path in (attention, retrieval):
        assert pathlib.Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for job, files in before.items():
        assert _snapshot(job) == files, f"the report changed {job}"
