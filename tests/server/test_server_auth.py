"""Who may call the API: a token or a login cookie, XSRF on cookie POSTs, and jupyter_server's authorizer."""

from __future__ import annotations

import json
import urllib.parse
from http.cookies import SimpleCookie

import pytest
from jupyter_server.auth import Authorizer
from traitlets.config import Config

ROUTES = [
    ("GET", "status"),
    ("GET", "runs"),
    ("GET", f"runs/{'0' * 32}"),
    ("GET", f"runs/{'0' * 32}/artifact?path=figures/loss.png"),
    ("GET", "notebook/parameters?notebook=x.ipynb"),
    ("GET", "models"),
    ("GET", "models/some-model"),
    ("POST", "models/some-model/promote"),
    ("GET", "jobs"),
    ("POST", "jobs"),
    ("GET", f"jobs/{'0' * 32}"),
    ("POST", f"jobs/{'0' * 32}/cancel"),
]


class DenyNbmlops(Authorizer):
    """Allows everything but the nbmlops resource."""

    def is_authorized(self, handler, user, action, resource):
        return resource != "nbmlops"


class ReadOnly(Authorizer):
    """Allows reading only."""

    def is_authorized(self, handler, user, action, resource):
        return action == "read"


@pytest.fixture
def jp_server_config(request) -> Config:
    config = {"ServerApp": {"jpserver_extensions": {"nbmlops": True}}}
    authorizer = getattr(request, "param", None)
    if authorizer is not None:
        config["ServerApp"]["authorizer_class"] = authorizer
    return Config(config)


@pytest.fixture
def fetch(http_server_client, jp_base_url, root):
    """``await fetch(method, route, headers)`` -> the response, for any status; no credentials added."""

    async def call(method, route, headers=None, body=None):
        return await http_server_client.fetch(
            f"{jp_base_url}nbmlops/api/{route}", method=method, headers=headers or {},
            body=(body or "{}") if method == "POST" else None, raise_error=False, follow_redirects=False,
        )

    return call


@pytest.fixture
def login_cookies(http_server_client, jp_base_url, jp_serverapp) -> dict[str, str]:
    """The cookies a browser holds after logging in with the token on the login page: the user and ``_xsrf``."""

    async def login() -> dict[str, str]:
        page = await http_server_client.fetch(f"{jp_base_url}login", raise_error=False)
        cookies = _cookies(page)
        form = urllib.parse.urlencode({"password": jp_serverapp.identity_provider.token, "_xsrf": cookies["_xsrf"]})
        answer = await http_server_client.fetch(
            f"{jp_base_url}login", method="POST", body=form, headers={"Cookie": _header(cookies)},
            follow_redirects=False, raise_error=False,
        )
        assert answer.code == 302, answer.body
        return cookies | _cookies(answer)

    return login


def _cookies(response) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("Set-Cookie"):
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


def _header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


@pytest.mark.parametrize(("method", "route"), ROUTES)
async def test_every_route_refuses_a_request_without_credentials(fetch, method, route):
    response = await fetch(method, route)
    assert response.code == 403
    assert "error" in json.loads(response.body)


@pytest.mark.parametrize(("method", "route"), ROUTES)
async def test_every_route_refuses_a_wrong_token(fetch, method, route):
    response = await fetch(method, route, {"Authorization": "token not-the-token"})
    assert response.code == 403


async def test_a_valid_token_is_enough(fetch, jp_auth_header):
    assert (await fetch("GET", "status", jp_auth_header)).code == 200
    assert (await fetch("GET", "jobs", jp_auth_header)).code == 200
    response = await fetch("POST", "jobs", jp_auth_header, body='{"notebook": "missing.ipynb"}')
    assert response.code == 404  # past authentication and XSRF: token requests need no XSRF header


async def test_a_login_cookie_reads_but_posts_only_with_the_xsrf_header(fetch, login_cookies):
    cookies = await login_cookies()
    assert (await fetch("GET", "status", {"Cookie": _header(cookies)})).code == 200
    response = await fetch("POST", "jobs", {"Cookie": _header(cookies)}, body='{"notebook": "missing.ipynb"}')
    assert response.code == 403 and "xsrf" in response.body.decode().lower()
    response = await fetch("POST", "jobs", {"Cookie": _header(cookies), "X-XSRFToken": "forged"},
                           body='{"notebook": "missing.ipynb"}')
    assert response.code == 403
    response = await fetch("POST", "jobs", {"Cookie": _header(cookies), "X-XSRFToken": cookies["_xsrf"]},
                           body='{"notebook": "missing.ipynb"}')
    assert response.code == 404  # authenticated and XSRF-checked: on to the request itself


@pytest.mark.parametrize("jp_server_config", [DenyNbmlops], indirect=True)
@pytest.mark.parametrize(("method", "route"), ROUTES)
async def test_every_route_asks_the_authorizer(fetch, jp_auth_header, method, route):
    response = await fetch(method, route, jp_auth_header)
    assert response.code == 403
    assert "not authorized" in json.loads(response.body)["error"]


@pytest.mark.parametrize("jp_server_config", [ReadOnly], indirect=True)
@pytest.mark.parametrize(("method", "route"), ROUTES)
async def test_reads_are_read_and_posts_are_write_for_the_authorizer(fetch, jp_auth_header, method, route):
    response = await fetch(method, route, jp_auth_header)
    if method == "POST":
        assert response.code == 403
    else:
        assert response.code != 403
