"""API docs work without internet: every asset the pages load is served by the service."""

from __future__ import annotations

import re

import pytest

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(api, page):
    response = api.get(page)
    assert response.status_code == 200, response.text
    html = response.text
    assert not re.search(r"https?://(?!localhost|127\.0\.0\.1)", html), "the page names an outside host"
    assets = [a or b for a, b in ASSET.findall(html)]
    assert any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        fetched = api.get(asset)
        assert fetched.status_code == 200, (asset, fetched.status_code)
        assert len(fetched.content) > 100


def test_swagger_ui_asks_no_online_validator(api):
    html = api.get("/docs").text
    assert '"validatorUrl": null' in html


def test_openapi_document_lists_the_metrics_endpoint(api):
    assert "/metrics" in api.get("/openapi.json").json()["paths"]
