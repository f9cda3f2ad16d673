"""The record query is answered at the HTTP edge for a cached reader key (app/api/direct.py,
``DirectRead``), and through FastAPI's declared route otherwise: the same answers either way."""

from __future__ import annotations

from tests.registry.factory import ingested, model_with_versions, rows

URL = "/v1/lineage/records"


def _twice(api, url: str, headers: dict[str, str]):
    """The same call before and after its key's client is cached (the first call caches it)."""
    from app.core.auth import client_cache

    client_cache._entries.clear()
    return api.get(url, headers=headers), api.get(url, headers=headers)


def _without_request_id(response) -> dict:
    body = response.json()
    body.pop("request_id", None)
    return body


def test_the_record_query_is_the_same_at_the_edge_and_through_the_router(backend, api, make_client, monkeypatch):
    from app.lineage.router import router

    (route,) = [r for r in router.routes if getattr(r, "path", "").startswith(URL)]
    answered = []
    read = route.direct.read

    async def counting(client, params):  # noqa: ANN001, ANN202
        answered.append(dict(params))
        return await read(client, params)

    monkeypatch.setattr(route.direct, "read", counting)
    ingested("ds", rows(12))
    model_with_versions("ds", "m", [[], ["r00003"]])
    reader, portal = make_client("ml"), make_client("portal")

    declared, direct = _twice(api, f"{URL}/ds/r00004", reader.headers)
    assert declared.status_code == direct.status_code == 200, (declared.text, direct.text)
    assert declared.json() == direct.json() and len(direct.json()["model_versions"]) == 2
    assert answered == [{"dataset": "ds", "record_key": "r00004"}], "only the cached key's call, at the edge"

    for url, headers, status in [
        (f"{URL}/ds/no-such-key", reader.headers, 404),
        (f"{URL}/ds/with/a/slash", reader.headers, 404),
        (f"{URL}/no-such-dataset/r00004", reader.headers, 404),
        (f"{URL}/ds/r00004", portal.headers, 403),
        (f"{URL}/ds/r00004", {"Authorization": reader.headers["Authorization"] + "x"}, 401),
        (f"{URL}/ds/r00004", {}, 401),
    ]:
        first, second = _twice(api, url, headers)
        assert first.status_code == second.status_code == status, (url, first.text, second.text)
        assert _without_request_id(first) == _without_request_id(second)
    assert {p["record_key"] for p in answered} == {"r00004", "no-such-key", "with/a/slash"}
