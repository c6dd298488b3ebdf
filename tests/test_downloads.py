"""Output-file pages and downloads: who gets what, which headers, which bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.urls import reverse
from django.utils import timezone

from scheduler.models import AuditEvent, OutputFile, Run, TaskDefinition
from scheduler.roles import VIEWERS
from tests.conftest import PASSWORD

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 40
HTML = b"<html><script>alert(document.cookie)</script></html>"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The role fixture makes six users; the default hasher costs half a second each.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def store(run: Run, name: str, data: bytes, content_type: str, kind="output") -> OutputFile:
    rel = Path(str(run.pk)) / kind / name
    target = Path(settings.SCHEDULER_FILE_ROOT) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return OutputFile.objects.create(
        run=run,
        name=name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
        stored_path=str(rel),
        kind=kind,
    )


def finished_run(definition: TaskDefinition) -> Run:
    now = timezone.now()
    return Run.objects.create(
        definition=definition,
        resource=definition.default_resource,
        state=Run.State.SUCCEEDED,
        started_at=now,
        finished_at=now,
        exit_code=0,
    )


@pytest.fixture
def restricted(db, local_resource, roles):
    """A definition only group 'team-a' sees, with one member who is a viewer."""
    team = Group.objects.create(name="team-a")
    d = TaskDefinition.objects.create(
        name="Secret", program="hello.py", default_resource=local_resource
    )
    d.allowed_groups.add(team)
    insider = User.objects.create_user("insider", "i@example.org", PASSWORD, is_staff=True)
    insider.groups.add(Group.objects.get(name=VIEWERS), team)
    return d


@pytest.fixture
def run(definition):
    return finished_run(definition)


def login(client, user):
    client.force_login(user)
    return client


def body(response) -> bytes:
    # The test client's wrapper closes a streamed response (and its file) once read
    # to the end; closing by hand would fire request_finished inside the test's
    # transaction and close its database connection.
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def url(name: str, run_id: int, file_id: int | None = None) -> str:
    args = [run_id] if file_id is None else [run_id, file_id]
    return reverse(f"scheduler:{name}", args=args)


# --- the list page ---------------------------------------------------------------


def test_the_file_page_lists_name_size_hash_type_and_a_download_link(client, roles, run):
    f = store(run, "report.csv", b"a,b\n1,2\n", "text/csv")
    response = login(client, roles["viewer"]).get(url("run-files", run.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert "report.csv" in html and f.sha256 in html and "text/csv" in html
    assert url("file-download", run.pk, f.pk) in html
    assert "8\xa0bytes" in html or "8 bytes" in html


def test_anonymous_users_are_sent_to_the_login_page(client, run):
    store(run, "a.txt", b"x", "text/plain")
    response = client.get(url("run-files", run.pk))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_a_non_staff_user_gets_404_even_with_role_permissions(client, roles, run):
    f = store(run, "a.txt", b"x", "text/plain")
    login(client, roles["nonstaff"])
    assert client.get(url("run-files", run.pk)).status_code == 404
    assert client.get(url("file-download", run.pk, f.pk)).status_code == 404


def test_a_staff_user_without_a_role_gets_404(client, run):
    f = store(run, "a.txt", b"x", "text/plain")
    bare = User.objects.create_user("bare", "b@example.org", PASSWORD, is_staff=True)
    login(client, bare)
    assert client.get(url("run-files", run.pk)).status_code == 404
    assert client.get(url("file-download", run.pk, f.pk)).status_code == 404


def test_a_restricted_definitions_files_are_404_for_outsiders_and_200_for_members(
    client, roles, restricted
):
    run = finished_run(restricted)
    f = store(run, "secret.txt", b"top secret", "text/plain")
    for name in ("viewer", "operator", "administrator"):
        login(client, roles[name])
        for view in ("run-files", "file-preview", "file-download"):
            args = (run.pk,) if view == "run-files" else (run.pk, f.pk)
            response = client.get(url(view, *args))
            assert response.status_code == 404, (name, view)
            assert b"top secret" not in body(response)
    login(client, User.objects.get(username="insider"))
    assert body(client.get(url("file-download", run.pk, f.pk))) == b"top secret"
    login(client, roles["superuser"])
    assert body(client.get(url("file-download", run.pk, f.pk))) == b"top secret"


# --- previews --------------------------------------------------------------------


def test_a_text_preview_is_escaped_and_shows_only_the_first_lines(client, roles, run):
    lines = [f"<script>alert({i})</script>" for i in range(200)]
    f = store(run, "log.txt", "\n".join(lines).encode(), "text/plain")
    response = login(client, roles["viewer"]).get(url("file-preview", run.pk, f.pk))
    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert(" not in html
    assert "&lt;script&gt;alert(0)&lt;/script&gt;" in html
    assert "alert(49)" in html and "alert(50)" not in html
    assert "Only the first lines are shown" in html


def test_a_csv_preview_is_an_html_table_with_escaped_cells(client, roles, run):
    data = b'name,value\n"<b>bold</b>",1\n"semi;colon ""quoted""",2\n'
    f = store(run, "table.csv", data, "text/csv")
    html = login(client, roles["viewer"]).get(url("file-preview", run.pk, f.pk)).content.decode()
    assert '<table id="csv-preview">' in html
    assert "<th>name</th><th>value</th>" in html
    assert "<td>&lt;b&gt;bold&lt;/b&gt;</td>" in html
    assert "<td>semi;colon &quot;quoted&quot;</td>" in html


@pytest.mark.parametrize(
    "name,data,content_type",
    [
        ("page.html", HTML, "text/html"),
        ("logo.svg", b"<svg onload='alert(1)'/>", "image/svg+xml"),
        ("paper.pdf", b"%PDF-1.4 /JavaScript", "application/pdf"),
    ],
)
def test_html_svg_and_pdf_are_never_shown_inline(client, roles, run, name, data, content_type):
    f = store(run, name, data, content_type)
    login(client, roles["viewer"])
    page = client.get(url("file-preview", run.pk, f.pk)).content.decode()
    assert "No preview for this type" in page
    assert url("file-inline", run.pk, f.pk) not in page
    assert data.decode() not in page
    response = client.get(url("file-inline", run.pk, f.pk))
    assert response.status_code == 404
    assert data not in body(response)


def test_an_image_preview_is_served_inline_with_its_stored_type_and_locked_down(client, roles, run):
    f = store(run, "chart.png", PNG, "image/png")
    login(client, roles["viewer"])
    page = client.get(url("file-preview", run.pk, f.pk)).content.decode()
    assert f'<img src="{url("file-inline", run.pk, f.pk)}"' in page
    response = client.get(url("file-inline", run.pk, f.pk))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("inline")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert body(response) == PNG


def test_html_stored_as_a_png_is_not_served_inline(client, roles, run):
    f = store(run, "evil.png", HTML, "image/png")
    login(client, roles["viewer"])
    response = client.get(url("file-inline", run.pk, f.pk))
    assert response.status_code == 404
    assert b"<script>" not in body(response)
    page = client.get(url("file-preview", run.pk, f.pk)).content.decode()
    assert "does not start like the image type" in page


@pytest.mark.parametrize(
    "content_type,data",
    [
        ("image/jpeg", b"\xff\xd8\xff\xe0" + b"\x00" * 20),
        ("image/gif", b"GIF89a" + b"\x00" * 20),
        ("image/webp", b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20),
    ],
)
def test_jpeg_gif_and_webp_are_shown_inline(client, roles, run, content_type, data):
    f = store(run, "picture", data, content_type)
    response = login(client, roles["viewer"]).get(url("file-inline", run.pk, f.pk))
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert body(response) == data


# --- downloads -------------------------------------------------------------------


def test_a_download_is_an_attachment_with_nosniff_and_a_sandbox_csp(client, roles, run):
    f = store(run, "page.html", HTML, "text/html")
    response = login(client, roles["viewer"]).get(url("file-download", run.pk, f.pk))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="page.html"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["Content-Length"] == str(len(HTML))
    assert response["Accept-Ranges"] == "bytes"
    assert response.streaming
    assert body(response) == HTML


def test_a_file_name_with_quotes_and_unicode_is_encoded_in_the_disposition(client, roles, run):
    f = store(run, 'r\u00e9sum\u00e9 "v2".txt', b"x", "text/plain")
    response = login(client, roles["viewer"]).get(url("file-download", run.pk, f.pk))
    assert response["Content-Disposition"].startswith("attachment; filename*=utf-8''")
    assert "\n" not in response["Content-Disposition"]
    body(response)


def test_a_download_records_user_address_action_and_object(client, roles, run):
    f = store(run, "a.txt", b"hello", "text/plain")
    login(client, roles["viewer"])
    body(client.get(url("file-download", run.pk, f.pk), REMOTE_ADDR="192.0.2.7"))
    event = AuditEvent.objects.get(action="download")
    assert event.user == roles["viewer"]
    assert event.username == "viewer"
    assert event.ip == "192.0.2.7"
    assert (event.object_type, event.object_id) == ("outputfile", str(f.pk))
    assert event.detail["run"] == run.pk and event.detail["name"] == "a.txt"


def test_a_refused_download_records_nothing(client, roles, restricted):
    run = finished_run(restricted)
    f = store(run, "a.txt", b"hello", "text/plain")
    login(client, roles["viewer"])
    assert client.get(url("file-download", run.pk, f.pk)).status_code == 404
    assert not AuditEvent.objects.filter(action="download").exists()


DATA = bytes(range(256)) * 40  # 10240 bytes


@pytest.mark.parametrize(
    "header,status,start,end",
    [
        ("bytes=0-9", 206, 0, 9),
        ("bytes=100-", 206, 100, len(DATA) - 1),
        ("bytes=-16", 206, len(DATA) - 16, len(DATA) - 1),
        ("bytes=10000-999999", 206, 10000, len(DATA) - 1),
        ("bytes=0-0", 206, 0, 0),
        ("bytes=0-9,20-29", 200, 0, len(DATA) - 1),  # several ranges: whole file
        ("items=0-9", 200, 0, len(DATA) - 1),  # unknown unit: ignored
        ("bytes=9-3", 200, 0, len(DATA) - 1),  # malformed: ignored
    ],
)
def test_a_single_range_is_answered_with_206_and_the_right_bytes(
    client, roles, run, header, status, start, end
):
    f = store(run, "data.bin", DATA, "application/octet-stream")
    response = login(client, roles["viewer"]).get(
        url("file-download", run.pk, f.pk), HTTP_RANGE=header
    )
    assert response.status_code == status
    assert body(response) == DATA[start : end + 1]
    assert response["Content-Length"] == str(end - start + 1)
    if status == 206:
        assert response["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
        assert response["Content-Disposition"].startswith("attachment")
    else:
        assert not response.has_header("Content-Range")


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=99999-100000", "bytes=-0"])
def test_an_unsatisfiable_range_is_416_with_the_size(client, roles, run, header):
    f = store(run, "data.bin", DATA, "application/octet-stream")
    response = login(client, roles["viewer"]).get(
        url("file-download", run.pk, f.pk), HTTP_RANGE=header
    )
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(DATA)}"
    assert DATA[:64] not in body(response)


def test_if_range_with_the_current_etag_resumes_and_a_stale_one_restarts(client, roles, run):
    f = store(run, "data.bin", DATA, "application/octet-stream")
    login(client, roles["viewer"])
    first = client.get(url("file-download", run.pk, f.pk))
    etag = first["ETag"]
    body(first)
    assert etag == f'"{f.sha256}"'
    resumed = client.get(
        url("file-download", run.pk, f.pk), HTTP_RANGE="bytes=5000-", HTTP_IF_RANGE=etag
    )
    assert resumed.status_code == 206 and body(resumed) == DATA[5000:]
    stale = client.get(
        url("file-download", run.pk, f.pk), HTTP_RANGE="bytes=5000-", HTTP_IF_RANGE='"0000"'
    )
    assert stale.status_code == 200 and body(stale) == DATA
    dated = client.get(
        url("file-download", run.pk, f.pk),
        HTTP_RANGE="bytes=5000-",
        HTTP_IF_RANGE=first["Last-Modified"],
    )
    assert dated.status_code == 206 and body(dated) == DATA[5000:]


def test_head_gives_the_headers_without_the_body(client, roles, run):
    f = store(run, "data.bin", DATA, "application/octet-stream")
    response = login(client, roles["viewer"]).head(url("file-download", run.pk, f.pk))
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(DATA))
    assert body(response) == b""


def test_post_to_a_download_is_405(client, roles, run):
    f = store(run, "a.txt", b"x", "text/plain")
    response = login(client, roles["viewer"]).post(url("file-download", run.pk, f.pk))
    assert response.status_code == 405


def test_nginx_mode_hands_off_with_x_accel_redirect_and_sends_no_bytes(
    client, roles, run, settings
):
    settings.SCHEDULER_SENDFILE = "nginx"
    settings.SCHEDULER_SENDFILE_PREFIX = "/protected-files/"
    f = store(run, "my report.csv", b"a,b\n", "text/csv")
    response = login(client, roles["viewer"]).get(url("file-download", run.pk, f.pk))
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/protected-files/{run.pk}/output/my%20report.csv"
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert body(response) == b""
    assert AuditEvent.objects.filter(action="download", object_id=str(f.pk)).count() == 1


def test_apache_mode_hands_off_with_x_sendfile_and_the_absolute_path(client, roles, run, settings):
    settings.SCHEDULER_SENDFILE = "apache"
    f = store(run, "a.txt", b"hello", "text/plain")
    response = login(client, roles["viewer"]).get(url("file-download", run.pk, f.pk))
    assert response["X-Sendfile"] == str(
        (Path(settings.SCHEDULER_FILE_ROOT) / f.stored_path).resolve()
    )
    assert Path(response["X-Sendfile"]).is_absolute()
    assert body(response) == b""


# --- store containment -----------------------------------------------------------


@pytest.fixture
def outside_secret(tmp_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_bytes(b"outside the store")
    return secret


def _row_pointing_at(run: Run, stored_path: str) -> OutputFile:
    return OutputFile.objects.create(
        run=run, name="x.txt", size=1, content_type="text/plain", stored_path=stored_path
    )


@pytest.mark.parametrize(
    "make_path",
    [
        lambda secret: "../outside/secret.txt",
        lambda secret: str(secret),
        lambda secret: "1/../../outside/secret.txt",
        lambda secret: "",
        lambda secret: ".",
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "empty", "the-root-itself"],
)
def test_a_stored_path_outside_the_store_serves_nothing(
    client, roles, run, outside_secret, make_path
):
    Path(settings.SCHEDULER_FILE_ROOT).mkdir(parents=True, exist_ok=True)
    f = _row_pointing_at(run, make_path(outside_secret))
    login(client, roles["superuser"])
    for view in ("file-download", "file-preview", "file-inline"):
        response = client.get(url(view, run.pk, f.pk))
        assert response.status_code == 404, view
        assert b"outside the store" not in body(response)


def test_a_link_inside_the_store_pointing_out_serves_nothing(
    client, roles, run, outside_secret, settings
):
    root = Path(settings.SCHEDULER_FILE_ROOT)
    (root / str(run.pk)).mkdir(parents=True)
    os.symlink(outside_secret, root / str(run.pk) / "link.txt")
    f = _row_pointing_at(run, f"{run.pk}/link.txt")
    login(client, roles["superuser"])
    for mode in ("django", "nginx", "apache"):
        settings.SCHEDULER_SENDFILE = mode
        response = client.get(url("file-download", run.pk, f.pk))
        assert response.status_code == 404, mode
        assert not response.has_header("X-Accel-Redirect")
        assert not response.has_header("X-Sendfile")
        assert b"outside the store" not in body(response)


def test_a_file_gone_from_the_store_is_404(client, roles, run):
    f = store(run, "a.txt", b"x", "text/plain")
    (Path(settings.SCHEDULER_FILE_ROOT) / f.stored_path).unlink()
    response = login(client, roles["viewer"]).get(url("file-download", run.pk, f.pk))
    assert response.status_code == 404


# --- memory: a real server streams without holding the file ----------------------


@pytest.mark.slow
def test_a_50_mb_download_grows_the_real_servers_memory_by_less_than_50_mb(tmp_path):
    """Not timed: bench/download.py prints the 2 GB figures and throughput."""
    from bench.download import MiB, measure

    result = measure(tmp_path / "site", 50 * MiB, check_hash=True)
    assert result.size == 50 * MiB
    assert result.sha256_ok is True
    assert result.growth < 50 * 1000 * 1000, f"server RSS grew by {result.growth / MiB:.1f} MiB"


def test_behind_the_proxy_the_audit_records_the_forwarded_address(client, roles, run, settings):
    settings.SCHEDULER_BEHIND_PROXY = True
    f = store(run, "a.txt", b"x", "text/plain")
    login(client, roles["viewer"])
    body(
        client.get(
            url("file-download", run.pk, f.pk),
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR="198.51.100.23",
        )
    )
    assert AuditEvent.objects.get(action="download").ip == "198.51.100.23"


def test_without_a_proxy_a_forged_forwarded_header_is_ignored(client, roles, run, settings):
    settings.SCHEDULER_BEHIND_PROXY = False
    f = store(run, "a.txt", b"x", "text/plain")
    login(client, roles["viewer"])
    body(
        client.get(
            url("file-download", run.pk, f.pk),
            REMOTE_ADDR="192.0.2.50",
            HTTP_X_FORWARDED_FOR="10.9.9.9",
        )
    )
    assert AuditEvent.objects.get(action="download").ip == "192.0.2.50"


# --- the documented nginx configuration, for real --------------------------------


def _nginx_conf(tmp_path: Path, port: int, app_port: int, var: Path) -> Path:
    """docs/deploy/nginx-scheduler.conf with TLS lines dropped and paths/ports swapped."""
    from bench.download import free_port

    snippet = (
        Path(__file__).resolve().parent.parent / "docs/deploy/nginx-scheduler.conf"
    ).read_text()
    lines = [line for line in snippet.splitlines() if not line.rstrip().endswith("# TLS")]
    snippet = "\n".join(lines)
    # The port-80 redirect server gets a port of its own; the TLS server plain HTTP.
    snippet = snippet.replace("listen 80;", f"listen 127.0.0.1:{free_port()};", 1)
    snippet = snippet.replace(
        "server_name scheduler.example.org;\n\n    client_max_body_size",
        f"listen 127.0.0.1:{port};\n    server_name localhost;\n\n    client_max_body_size",
    )
    snippet = snippet.replace("127.0.0.1:8000", f"127.0.0.1:{app_port}")
    snippet = snippet.replace("/srv/scheduler/var/", f"{var}/")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""user root;
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{snippet}
}}
"""
    )
    return conf


ODD_FILE = """
from scheduler.models import OutputFile
big = OutputFile.objects.get(name="big.bin")
f = OutputFile.objects.create(run=big.run, name="my report é%20.csv", size=8,
    content_type="text/csv", stored_path="big/my report é%20.csv")
print(f"/scheduler/runs/{big.run_id}/files/{f.pk}/download/")
"""


@pytest.mark.slow
def test_the_documented_nginx_config_serves_ranges_and_hides_the_store(tmp_path):
    import http.client
    import shutil
    import subprocess
    import sys

    from bench.download import free_port, prepare_site, serving, wait_for_port
    from tests.helpers import require_or_skip

    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        require_or_skip("nginx is not installed (apt install nginx-light)")
    var = tmp_path / "site"
    size = 3 * 1024 * 1024 + 17
    env, session_key, download_url, big = prepare_site(
        var, size, SCHEDULER_SENDFILE="nginx", SCHEDULER_BEHIND_PROXY="1"
    )
    data = big.read_bytes()
    odd = big.parent / "my report é%20.csv"
    odd.write_bytes(b"a,b\n1,2\n")
    odd_url = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", ODD_FILE],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    with serving(env, server="gunicorn") as (app_port, _pid):
        port = free_port()
        conf = _nginx_conf(tmp_path, port, app_port, var)
        proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(conf.parent)])
        try:
            wait_for_port(port, proc)

            def get(path, **headers):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", path, headers={"Cookie": f"sessionid={session_key}", **headers})
                response = conn.getresponse()
                content = response.read()
                conn.close()
                return response, content

            response, content = get(download_url)
            assert response.status == 200, content[:300]
            assert content == data
            assert response.getheader("Content-Disposition") == 'attachment; filename="big.bin"'
            assert response.getheader("X-Content-Type-Options") == "nosniff"
            assert response.getheader("Content-Security-Policy") == "default-src 'none'; sandbox"
            assert response.getheader("X-Accel-Redirect") is None
            assert response.getheader("Content-Type") == "application/octet-stream"

            response, content = get(download_url, Range="bytes=1000-1999")
            assert response.status == 206
            assert response.getheader("Content-Range") == f"bytes 1000-1999/{size}"
            assert response.getheader("X-Content-Type-Options") == "nosniff"
            assert content == data[1000:2000]

            response, _ = get(download_url, Range=f"bytes={size}-")
            assert response.status == 416

            response, content = get(odd_url)
            assert response.status == 200 and content == b"a,b\n1,2\n"

            response, content = get("/protected-files/big/big.bin")
            assert response.status == 404
            assert data[:1000] not in content

            response, content = get(download_url, Cookie="")
            assert response.status == 302  # to the login page, nothing served
            assert data[:1000] not in content
        finally:
            proc.terminate()
            proc.wait(10)


def test_a_head_request_is_not_recorded_as_a_download(client, roles, run):
    f = store(run, "a.txt", b"x", "text/plain")
    login(client, roles["viewer"])
    assert client.head(url("file-download", run.pk, f.pk)).status_code == 200
    assert not AuditEvent.objects.filter(action="download").exists()
    body(client.get(url("file-download", run.pk, f.pk)))
    assert AuditEvent.objects.filter(action="download").count() == 1
