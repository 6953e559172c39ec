"""The bandit pages of an endpoint: its routers, and one router's arms and charts."""

from __future__ import annotations

import plotly
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse

from config.errors import NotFound
from dashboard import charts
from dashboard.views import page
from inference.bandits import selectors
from inference.bandits.api import router_for_user_or_404
from inference.selectors import endpoint_for_user_or_404


@login_required
def bandit_index(request: HttpRequest, name: str) -> HttpResponse:
    try:
        endpoint = endpoint_for_user_or_404(request.user, name)
    except NotFound as exc:
        raise Http404(exc.message) from None
    routers = selectors.routers_for_endpoint(name)
    return page(request, "dashboard/bandits/index.html", {"endpoint": endpoint, "routers": routers})


@login_required
def bandit_router(request: HttpRequest, name: str, router: str) -> HttpResponse:
    try:
        endpoint = router_for_user_or_404(request.user, name, router)
    except NotFound as exc:
        raise Http404(exc.message) from None
    stats = selectors.router_stats(router)
    figures = {key: charts.figure_data(fig) for key, fig in charts.bandit_figures(stats).items()}
    return page(
        request,
        "dashboard/bandits/router.html",
        {"endpoint": endpoint, "stats": stats, "figures": figures, "plotly_version": plotly.__version__},
    )
