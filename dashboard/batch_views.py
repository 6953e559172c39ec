"""The Batch pages: the jobs list and one job's live progress (it polls the API)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse

from config.errors import NotFound
from dashboard.views import page
from inference.batch import selectors
from inference.batch.models import BatchJob

JOBS_PER_PAGE = 50


@login_required
def batch_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "")
    if state not in BatchJob.State.values:
        state = ""
    jobs = selectors.job_list(user=request.user, state=state)
    page_obj = Paginator(jobs, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    rows = [{"job": job, "progress": selectors.job_progress(job)} for job in page_obj]
    return page(
        request,
        "dashboard/batch/list.html",
        {"page_obj": page_obj, "rows": rows, "state": state, "states": BatchJob.State.values},
    )


@login_required
def batch_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    try:
        job = selectors.job_get(job_id=job_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    return page(
        request,
        "dashboard/batch/detail.html",
        {
            "job": job,
            "progress": selectors.job_progress(job),
            "chunks": job.chunks.order_by("index"),
            "error_sample": selectors.job_error_sample(job),
        },
    )
