"""The studio: a local web page to sample, watch the reverse process, and edit, with minigen's own
pipelines (`python -m minigen.studio --ckpt runs/ddpm/last.pt`).

    jobs.py     a request from the page, checked; run through DiffusionPipeline's methods
    server.py   the HTTP server (standard library only), one job at a time per model, streams
    static/     the page: plain HTML, CSS and JavaScript, nothing fetched from elsewhere
"""

from .jobs import BadRequest, Cancelled, read_job, run_job
from .server import Studio, StudioServer

__all__ = ["BadRequest", "Cancelled", "Studio", "StudioServer", "read_job", "run_job"]
