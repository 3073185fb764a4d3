"""API keys: key files, every endpoint with keys off, on, wrong and right, admin-only index changes, the seeds'
client with a key, an open /health that says nothing secret, and the warning for an exposed server without keys."""

from __future__ import annotations

import logging
import subprocess
import sys

import httpx
import pytest

from hpi.cli.serve import warn_if_exposed
from hpi.errors import InvalidConfigError
from hpi.serving.app import create_app
from hpi.serving.auth import AuthConfig, AuthMiddleware, key_digest, load_key_file, parse_keys, presented_key
from hpi.serving.common import ServeSettings
from hpi.serving.protocol import INDEX_CHANGING_ENDPOINTS
from tests.serving.conftest import LiveServer, b64, jpeg_bytes
from tests.serving.test_app_classification import CLIENT, check_error

pytestmark = pytest.mark.serving

USER_KEY = "user-key-0123456789abcdef"
OTHER_USER_KEY = "second-user-key-fedcba9876"
ADMIN_KEY = "admin-key-0123456789abcdef"


def auth(user=(USER_KEY,), admin=()) -> AuthConfig:
    return AuthConfig(api_key_digests=frozenset(key_digest(k) for k in user),
                      admin_key_digests=frozenset(key_digest(k) for k in admin))


# ----------------------------------------------------------------------------------------------- key files


def test_key_files_hold_keys_or_digests_and_only_digests_are_kept(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# clients\n{USER_KEY}\n\n  sha256:{key_digest(OTHER_USER_KEY).upper()}  \n", encoding="utf-8")
    digests = load_key_file(path)
    assert digests == {key_digest(USER_KEY), key_digest(OTHER_USER_KEY)}
    assert USER_KEY not in repr(AuthConfig(api_key_digests=digests))
    config = AuthConfig.from_files(str(path))
    assert config.role_of(USER_KEY) == "user" and config.role_of(OTHER_USER_KEY) == "user"
    assert config.role_of("wrong-key-0123456789") is None and config.role_of(None) is None


@pytest.mark.parametrize(("text", "fragment"), [("", "holds no key"), ("# only a comment\n", "holds no key"),
                                                ("short\n", "line 1: a key must be at least 16"),
                                                ("has a space in it ok\n", "without spaces"),
                                                ("sha256:abcd\n", "line 1")])
def test_bad_key_files_name_the_problem(tmp_path, text, fragment):
    path = tmp_path / "keys"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidConfigError, match=fragment):
        load_key_file(path)


def test_a_byte_order_mark_does_not_become_part_of_the_first_key(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_bytes("\ufeffcorrect-horse-battery-staple\nsecond-key-0123456789\n".encode())
    path.chmod(0o600)
    assert key_digest("correct-horse-battery-staple") in load_key_file(path)


def test_a_key_file_others_can_read_is_loaded_with_a_warning(tmp_path, caplog):
    path = tmp_path / "keys.txt"
    path.write_text("correct-horse-battery-staple\n")
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="hpi.serving.auth"):
        assert load_key_file(path)
    assert "readable or writable by other users (mode 0o644)" in caplog.text and "chmod 600" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level("WARNING", logger="hpi.serving.auth"):
        load_key_file(path)
    assert caplog.text == ""


def test_missing_key_file_and_non_digests_are_config_errors(tmp_path):
    with pytest.raises(InvalidConfigError, match="cannot read the key file"):
        load_key_file(tmp_path / "absent")
    with pytest.raises(InvalidConfigError, match="not a lowercase SHA-256"):
        AuthConfig(api_key_digests=frozenset({USER_KEY}))
    assert parse_keys([USER_KEY], "x") == {key_digest(USER_KEY)}


def test_the_key_is_taken_from_bearer_or_x_api_key():
    assert presented_key([(b"authorization", f"Bearer {USER_KEY}".encode())]) == USER_KEY
    assert presented_key([(b"authorization", f"bearer  {USER_KEY} ".encode())]) == USER_KEY
    assert presented_key([(b"x-api-key", USER_KEY.encode())]) == USER_KEY
    assert presented_key([(b"authorization", b"Basic dXNlcjpwdw==")]) is None
    assert presented_key([]) is None


def test_admin_keys_are_accepted_everywhere_and_needed_only_for_index_changes():
    both = auth(admin=(ADMIN_KEY,))
    guard = AuthMiddleware(None, both, open_paths=["/health"], admin_paths=INDEX_CHANGING_ENDPOINTS)
    assert guard.required_role("/health") is None
    assert guard.required_role("/shitu-infer") == "user"
    assert all(guard.required_role(p) == "admin" for p in INDEX_CHANGING_ENDPOINTS)
    assert both.role_of(ADMIN_KEY) == "admin" and both.role_of(USER_KEY) == "user"
    admin_only = AuthMiddleware(None, auth(user=(), admin=(ADMIN_KEY,)), open_paths=["/health"],
                                admin_paths=INDEX_CHANGING_ENDPOINTS)
    assert admin_only.required_role("/shitu-infer") is None
    assert admin_only.required_role("/shitu-index-build") == "admin"


# ----------------------------------------------------------------------------------------------- every endpoint


ENDPOINTS = [("POST", "/image-classification"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"),
             ("POST", "/nope")]


@pytest.fixture(scope="module")
def keyed_server(toy_model):
    with LiveServer(create_app(toy_model, ServeSettings(auth=auth(user=(USER_KEY, OTHER_USER_KEY))))) as srv:
        yield srv


def call(url: str, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"image": b64(jpeg_bytes()), "visualize": False} if method == "POST" else None
    return httpx.request(method, url + path, json=body, headers=headers or {}, timeout=60)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key-0123456789"},
                                     {"X-API-Key": "wrong-key-0123456789"}, {"Authorization": f"Basic {USER_KEY}"},
                                     {"Authorization": "Bearer"}],
                         ids=["none", "wrong-bearer", "wrong-x-api-key", "not-bearer", "empty-bearer"])
def test_every_endpoint_but_health_refuses_a_missing_or_wrong_key(keyed_server, method, path, headers):
    resp = call(keyed_server.url, method, path, headers)
    check_error(resp, 401, "missing or wrong API key")
    assert resp.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {USER_KEY}"}, {"X-API-Key": OTHER_USER_KEY}],
                         ids=["bearer", "x-api-key"])
def test_every_endpoint_answers_a_right_key(keyed_server, method, path, headers):
    resp = call(keyed_server.url, method, path, headers)
    expected = 404 if path == "/nope" else 200
    assert resp.status_code == expected, resp.text


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_without_keys_every_endpoint_is_open(toy_model, method, path):
    with LiveServer(create_app(toy_model)) as srv:
        resp = call(srv.url, method, path)
    assert resp.status_code == (404 if path == "/nope" else 200), resp.text


def test_health_is_open_but_says_nothing_secret_without_a_key(keyed_server):
    anonymous = httpx.get(f"{keyed_server.url}/health", timeout=30)
    wrong = httpx.get(f"{keyed_server.url}/health", headers={"X-API-Key": "wrong-key-0123456789"}, timeout=30)
    keyed = httpx.get(f"{keyed_server.url}/health", headers={"X-API-Key": USER_KEY}, timeout=30)
    for resp in (anonymous, wrong):
        assert resp.status_code == 200
        result = resp.json()["result"]
        assert result == {"status": "ok", "pipeline": "image_classification", "models": None, "batching": None}
    assert keyed.json()["result"]["models"][0]["name"] == "ToyNet"
    for text in (anonymous.text, keyed.text):
        for secret in (USER_KEY, OTHER_USER_KEY, key_digest(USER_KEY), key_digest(OTHER_USER_KEY)):
            assert secret not in text


def test_an_oversized_body_without_a_key_is_refused_before_it_is_read(toy_model):
    from hpi.serving.limits import ServingLimits

    settings = ServeSettings(auth=auth(), limits=ServingLimits(max_body_bytes=1024))
    with LiveServer(create_app(toy_model, settings)) as srv:
        resp = httpx.post(f"{srv.url}/image-classification", content=b"x" * 4096, timeout=30)
    check_error(resp, 401, "missing or wrong API key")


def test_the_seeds_client_works_with_a_key_added(keyed_server, tmp_path):
    plain = CLIENT.format(url=keyed_server.url)
    keyed = plain.replace("requests.post(API_URL, json=payload)",
                          f'requests.post(API_URL, json=payload, headers={{"Authorization": "Bearer {USER_KEY}"}})')
    assert keyed.count(USER_KEY) == 1  # the one change: a header with the key
    (tmp_path / "demo.jpg").write_bytes(jpeg_bytes("chelsea"))
    for source, ok in ((keyed, True), (plain, False)):
        (tmp_path / "client.py").write_text(source, encoding="utf-8")
        run = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert (run.returncode == 0) is ok, run.stderr
        assert ("Categories:" in run.stdout) is ok


# ----------------------------------------------------------------------------------------------- exposure warning


@pytest.mark.parametrize(("host", "keys", "warned"), [("0.0.0.0", False, True), ("192.168.1.5", False, True),
                                                      ("::", False, True), ("0.0.0.0", True, False),
                                                      ("127.0.0.1", False, False), ("localhost", False, False),
                                                      ("::1", False, False)])
def test_binding_beyond_loopback_without_keys_warns(caplog, host, keys, warned):
    settings = ServeSettings(auth=auth() if keys else AuthConfig())
    with caplog.at_level(logging.WARNING, logger="hpi.cli.serve"):
        assert warn_if_exposed(host, settings) is warned
    assert ("without API keys" in caplog.text) is warned
