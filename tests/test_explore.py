"""`ganstack explore` (issue 20 item 4): a local page showing a trained stack level by level.

The API is tested without a browser (Starlette's TestClient) on a tiny SGAN run (levels z1 over
z0, outputs h1 then image) and a tiny text-conditional StackGAN-v2 run (noise z and ca, three
scales); then the page itself in headless Chromium, served by `ganstack explore` on an export.
The browser test skips without chromium and chromedriver, unless GANSTACK_REQUIRE_BROWSER=1
(set by .ci/run), where it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ganstack.cli import main
from ganstack.config import load_config
from ganstack.explore import Explorer, Request
from ganstack.run import load

from .conftest import tiny_config_overrides

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # Starlette >= 1.x would have its TestClient on httpx2; httpx still works.
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]
REQUIRED = os.environ.get("GANSTACK_REQUIRE_BROWSER") == "1"  # set by .ci/run
if not REQUIRED:
    pytest.importorskip("starlette", reason="ganstack[explore] is not installed")

V2_TINY = [
    "data.resolution=16",
    "data.num_images=96",
    "data.eval_size=48",
    "data.text_dim=32",
    "model.base_size=8",
    "model.branches=2",
    "model.gf_dim=8",
    "model.df_dim=4",
    "model.ef_dim=8",
    "model.z_dim=8",
    "model.r_num=1",
    "model.caption_bank=16",
    "train.batch_size=8",
    "train.phases.joint=2",
    "train.log_every=1",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "train.tensorboard=false",
    "train.progress=false",
    "train.num_threads=1",
]
CAPTION_A = "a large red circle in the middle"
CAPTION_B = "a small blue star at the top left on a striped background"


@pytest.fixture(scope="module")
def sgan_run(tmp_path_factory, mnist_dir) -> Path:
    out = tmp_path_factory.mktemp("explore") / "sgan"
    assert (
        main(
            [
                "-q",
                "train",
                "sgan-mnist",
                "--out",
                str(out),
                "--no-eval",
                *tiny_config_overrides(mnist_dir),
                "train.phases.independent=2",
                "train.phases.joint=2",
                "train.num_threads=1",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def sgan_export(sgan_run, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("explore-export") / "sgan"
    assert main(["-q", "export", str(sgan_run), str(dest)]) == 0
    return dest


@pytest.fixture(scope="module")
def v2_run(tmp_path_factory) -> Path:
    from ganstack.train.trainer import Trainer

    out = tmp_path_factory.mktemp("explore") / "v2"
    with Trainer(load_config("stackgan-v2-shapes", V2_TINY), out) as t:
        assert t.fit() == "done"
    return out


def client(run: Path):
    from starlette.testclient import TestClient

    from ganstack.explore.server import create_app

    return TestClient(create_app(Explorer(load(run), str(run))))


@pytest.fixture(scope="module")
def sgan_client(sgan_run):
    with client(sgan_run) as c:
        yield c


@pytest.fixture(scope="module")
def v2_client(v2_run):
    with client(v2_run) as c:
        yield c


def post(c, body: dict) -> dict:
    r = c.post("/api/sample", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def changed(a: dict, b: dict) -> set[str]:
    return {k for k in a["outputs"] if a["outputs"][k] != b["outputs"][k]}


# ---- the API ---------------------------------------------------------------------------------


def test_the_model_describes_levels_top_to_bottom_and_outputs_coarse_to_fine(
    sgan_client, v2_client
):
    m = sgan_client.get("/api/model").json()
    assert m["model"] == "sgan" and [lv["name"] for lv in m["levels"]] == ["z1", "z0"]
    assert [o["name"] for o in m["outputs"]] == ["h1", "image"]
    assert m["outputs"][0]["kind"] == "features" and m["outputs"][1]["kind"] == "image"
    assert (m["outputs"][1]["height"], m["outputs"][1]["width"]) == (28, 28)
    # Measured on the model: the top level's noise reaches both outputs, the bottom's only
    # the image; the class reaches both.
    assert {lv["name"]: lv["affects"] for lv in m["levels"]} == {
        "z1": ["h1", "image"],
        "z0": ["image"],
    }
    assert m["class_affects"] == ["h1", "image"] and m["classes"] == [str(k) for k in range(10)]
    assert not m["text"]
    m = v2_client.get("/api/model").json()
    assert m["model"] == "stackgan_v2" and [lv["name"] for lv in m["levels"]] == ["z", "ca"]
    assert [o["name"] for o in m["outputs"]] == ["level1", "image"]
    assert [o["width"] for o in m["outputs"]] == [8, 16]
    assert all(lv["affects"] == ["level1", "image"] for lv in m["levels"])
    assert m["text"] and m["can_caption"] and m["text_affects"] == ["level1", "image"]
    assert len(m["example_captions"]) >= 3 and m["classes"] == []


@pytest.mark.parametrize("which", ["sgan", "v2"])
def test_a_level_s_noise_changes_that_level_and_the_finer_ones_not_the_coarser(
    which, sgan_client, v2_client, sgan_run, v2_run
):
    c = sgan_client if which == "sgan" else v2_client
    m = c.get("/api/model").json()
    levels = [lv["name"] for lv in m["levels"]]
    outputs = [o["name"] for o in m["outputs"]]
    body = {"seeds": {n: 10 + i for i, n in enumerate(levels)}}
    if which == "v2":
        body["caption"] = CAPTION_A
    base = post(c, body)
    again = post(c, body)
    assert again["outputs"] == base["outputs"]  # holding every seed: the same sample
    reached: list[set[str]] = []
    for name in levels:
        other = post(c, {**body, "seeds": {**body["seeds"], name: 999}})
        reached.append(changed(base, other))
    # The expected structure, from the models themselves: SGAN's z1 feeds G1 (h1) whose
    # output G0 turns into the image with z0; StackGAN-v2's z and ca enter the first branch.
    expected = (
        [{"h1", "image"}, {"image"}]
        if which == "sgan"
        else [{"level1", "image"}, {"level1", "image"}]
    )
    assert reached == expected
    for i, got in enumerate(reached):
        # A level's noise changes a run of outputs down to the finest, never a coarser one,
        # and reaches at least what the levels below it reach.
        assert got and outputs[-1] in got
        assert got == set(outputs[min(outputs.index(k) for k in got) :])
        assert all(got >= later for later in reached[i + 1 :])
    # The same, checked directly on the model's generate() with the page's inputs.
    ex = Explorer(load(sgan_run if which == "sgan" else v2_run))
    req = Request.parse(body, ex)
    a = ex.generate(ex.inputs(req))
    b = ex.generate(
        ex.inputs(Request.parse({**body, "seeds": {**body["seeds"], levels[-1]: 999}}, ex))
    )
    assert {k for k in outputs if not torch.equal(a[k], b[k])} == expected[-1]


def test_lapgan_levels_reach_their_own_level_and_the_finer_ones(tmp_path, mnist_dir):
    from .test_lapgan import tiny

    run = tmp_path / "lap"
    assert (
        main(
            [
                "-q",
                "train",
                "lapgan-mnist",
                "--out",
                str(run),
                "--no-eval",
                *tiny(mnist_dir),
                "train.phases.independent=2",
                "train.num_threads=1",
            ]
        )
        == 0
    )
    m = Explorer(load(run)).describe()
    # level0 is another name for the image: shown once.
    assert [o["name"] for o in m["outputs"]] == ["level2", "level1", "image"]
    assert [o["width"] for o in m["outputs"]] == [7, 14, 28]
    assert {lv["name"]: lv["affects"] for lv in m["levels"]} == {
        "z2": ["level2", "level1", "image"],
        "z1": ["level1", "image"],
        "z0": ["image"],
    }


def test_a_new_caption_changes_every_scale_and_the_caption_seed_picks_training_ones(v2_client):
    seeds = {"seeds": {"z": 1, "ca": 2}}
    a = post(v2_client, {**seeds, "caption": CAPTION_A})
    b = post(v2_client, {**seeds, "caption": CAPTION_B})
    assert changed(a, b) == {"level1", "image"}
    assert post(v2_client, {**seeds, "caption": CAPTION_A})["outputs"] == a["outputs"]
    # Without a caption, a training caption picked by text_seed.
    c = post(v2_client, {**seeds, "text_seed": 1})
    d = post(v2_client, {**seeds, "text_seed": 2})
    assert post(v2_client, {**seeds, "text_seed": 1})["outputs"] == c["outputs"]
    assert changed(c, d) == {"level1", "image"}


def test_interpolating_one_level_goes_from_its_seed_to_the_other(sgan_client):
    body = {"seeds": {"z1": 3, "z0": 4}, "y": 5}
    at_a = post(sgan_client, body)
    at_b = post(sgan_client, {**body, "seeds": {"z1": 3, "z0": 8}})
    interp = {"input": "z0", "seed_b": 8}
    assert (
        post(sgan_client, {**body, "interpolate": {**interp, "t": 0}})["outputs"] == at_a["outputs"]
    )
    assert (
        post(sgan_client, {**body, "interpolate": {**interp, "t": 1}})["outputs"] == at_b["outputs"]
    )
    mid = post(sgan_client, {**body, "interpolate": {**interp, "t": 0.5, "strip": 5}})
    assert changed(mid, at_a) == {"image"} and changed(mid, at_b) == {"image"}
    assert len(mid["strip"]) == 5 and mid["strip"][0] != mid["strip"][-1]
    assert all(s.startswith("data:image/png;base64,") for s in mid["strip"])


def test_normal_noise_is_interpolated_on_the_sphere(v2_run):
    ex = Explorer(load(v2_run))
    t = torch.linspace(0, 1, 5)
    z = ex.interpolated("z", 1, 2, t)
    a, b = ex.noise_vector("z", 1), ex.noise_vector("z", 2)
    assert torch.equal(z[0], a[0]) and torch.equal(z[-1], b[0])
    # slerp keeps the norm between the ends' (a straight line would shrink it midway)
    lo, hi = sorted([float(a.norm()), float(b.norm())])
    assert lo * 0.99 <= float(z[2].norm()) <= hi * 1.01


def test_bad_requests_get_a_clear_400(sgan_client):
    cases = [
        ({"seeds": {"z9": 1}}, "unknown noise inputs"),
        ({"seeds": {"z0": -1}}, "must be an integer in 0"),
        ({"seeds": {"z0": "1"}}, "must be an integer in 0"),
        ({"y": 10}, r"'y' must be a class in 0\.\.9"),
        ({"caption": "a red star"}, "takes no caption"),
        ({"interpolate": {"input": "z0", "t": 2}}, r"'t' must be a number in \[0, 1\]"),
        ({"interpolate": {"input": "y"}}, "cannot interpolate 'y'"),
        ({"interpolate": {"input": "z0", "strip": 1000}}, "'strip' must be"),
        ({"nope": 1}, "unknown request fields"),
        ([], "must be a JSON object"),
    ]
    for body, message in cases:
        r = sgan_client.post("/api/sample", json=body)
        assert r.status_code == 400 and re.search(message, r.json()["error"]), (body, r.text)
    r = sgan_client.post("/api/sample", content=b"{not json")
    assert r.status_code == 400
    r = sgan_client.post("/api/sample", content=b" " * (65 << 10))
    assert r.status_code == 413


def test_the_page_is_self_contained(sgan_client):
    page = sgan_client.get("/")
    assert page.status_code == 200 and "ganstack explore" in page.text
    for name in ("index.html", "explorer.js", "explorer.css"):
        r = sgan_client.get(f"/static/{name}")
        assert r.status_code == 200
        # Offline: nothing is loaded from another host (no CDN, no fonts, no analytics).
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", r.text), name
        assert "https://" not in r.text and "http://" not in r.text, name
    assert sgan_client.get("/static/../run.py").status_code == 404
    assert sgan_client.get("/static/nope.js").status_code == 404


def test_an_export_explores_as_its_run(sgan_run, sgan_export):
    a, b = Explorer(load(sgan_run)), Explorer(load(sgan_export))
    req = {"seeds": {"z1": 5, "z0": 6}, "y": 2}
    assert a.describe()["levels"] == b.describe()["levels"]
    assert a.render(Request.parse(req, a)) == b.render(Request.parse(req, b))


def test_cli_help_and_a_missing_extra(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        main(["explore", "--help"])
    out = capsys.readouterr().out
    assert "--port" in out and "127.0.0.1" in out and "docs/explorer.md" in out
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    assert main(["explore", "nowhere"]) == 2
    assert "pip install 'ganstack[explore]'" in capsys.readouterr().err


# ---- the page in a real browser ---------------------------------------------------------------


def browser_paths() -> tuple[str, str] | None:
    chrome = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    driver = shutil.which("chromedriver")
    return (chrome, driver) if chrome and driver else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`ganstack explore RUN` in a subprocess on a free port, until closed."""

    def __init__(self, run: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ganstack",
                "-q",
                "explore",
                str(run),
                "--port",
                str(self.port),
                "--threads",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait(self, timeout: float = 60.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ganstack explore exited: {self.proc.stdout.read()!r}")
            try:
                with urllib.request.urlopen(self.url + "api/model", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("ganstack explore did not start in time")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def browser():
    paths = browser_paths()
    if paths is None:
        reason = (
            "chromium and chromedriver are not installed (Debian: apt-get install "
            "chromium chromium-driver)"
        )
        if REQUIRED:
            pytest.fail(f"GANSTACK_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip("selenium is not installed (pip install 'ganstack[dev]')")
    chrome, driver = paths
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--disable-extensions",
        "--no-first-run",
    ):
        opts.add_argument(arg)
    b = webdriver.Chrome(options=opts, service=Service(executable_path=driver))
    b.set_page_load_timeout(30)
    try:
        yield b
    finally:
        b.quit()


def renders(b) -> int:
    return int(b.find_element("tag name", "body").get_attribute("data-renders"))


def settle(b, after: int, timeout: float = 30.0) -> None:
    """Wait until the page has rendered more than ``after`` times and is idle."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(b, timeout).until(
        lambda d: (
            renders(d) > after
            and d.find_element("tag name", "body").get_attribute("data-state") == "idle"
        )
    )
    error = b.find_element("id", "error")
    assert not error.is_displayed(), error.text


def images(b) -> dict[str, str]:
    return {
        e.get_attribute("data-output"): e.get_attribute("src")
        for e in b.find_elements("css selector", "img[data-output]")
    }


def act(b, element) -> None:
    n = renders(b)
    element.click()
    settle(b, n)


def test_the_page_in_headless_chromium(browser, sgan_export, v2_run, tmp_path):
    b = browser
    servers = [Server(sgan_export), Server(v2_run)]
    try:
        for s in servers:
            s.wait()
        # An export of SGAN: z1 (top) over z0 (bottom); outputs h1, then the image.
        b.get(servers[0].url)
        settle(b, 0)
        first = images(b)
        assert set(first) == {"h1", "image"}
        assert all(v.startswith("data:image/png;base64,") for v in first.values())
        button = b.find_element("css selector", "button[data-resample='z0']")
        act(b, button)
        after_z0 = images(b)
        assert after_z0["h1"] == first["h1"] and after_z0["image"] != first["image"]
        act(b, b.find_element("css selector", "button[data-resample='z1']"))
        after_z1 = images(b)
        assert all(after_z1[k] != after_z0[k] for k in after_z1)
        # Hold z1, resample all: only what z0 reaches changes.
        b.find_element("css selector", "input[data-hold='z1']").click()
        act(b, b.find_element("id", "resample-all"))
        held = images(b)
        assert held["h1"] == after_z1["h1"] and held["image"] != after_z1["image"]
        # The class changes every level.
        from selenium.webdriver.support.ui import Select

        n = renders(b)
        Select(b.find_element("id", "class")).select_by_index(3)
        settle(b, n)
        other_class = images(b)
        assert all(other_class[k] != held[k] for k in held)
        # Interpolating z0: a strip of images from z0's seed to another.
        n = renders(b)
        Select(b.find_element("id", "interp-input")).select_by_value("z0")
        settle(b, n)
        strip = b.find_elements("css selector", "#strip img")
        assert len(strip) == 8 and images(b)["h1"] == other_class["h1"]
        shot = tmp_path / "explorer-sgan.png"
        assert b.save_screenshot(str(shot)) and shot.stat().st_size > 1000

        # A text model: a new caption changes the image.
        b.get(servers[1].url)
        settle(b, 0)
        before = images(b)
        box = b.find_element("id", "caption")
        assert box.get_attribute("value")  # an example caption to start from
        n = renders(b)
        box.clear()
        box.send_keys(CAPTION_B + "\n")
        settle(b, n)
        after = images(b)
        assert after["image"] != before["image"] and after["level1"] != before["level1"]
        shot = tmp_path / "explorer-v2.png"
        assert b.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    finally:
        for s in servers:
            s.close()
