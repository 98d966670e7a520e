"""`uld serve`: the OpenAI-compatible API, exercised with the official `openai` client.

Every server here listens on 127.0.0.1 on a port the OS picks, runs in this process on a thread,
and is stopped at the end of its fixture. Waits are bounded; nothing depends on timing.
"""

import copy
import json
import logging
import threading

import pytest
import torch

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from uld import ULDForCausalLM, build_assistant  # noqa: E402
from uld.cli import main  # noqa: E402
from uld.errors import UldError  # noqa: E402
from uld.serve.engine import Engine, SamplingParams  # noqa: E402
from uld.serve.server import BackgroundServer, ServeSettings, is_loopback, load_engine  # noqa: E402
from uld.testing import tiny_llama  # noqa: E402

QUESTION = "Where was the author born?"
CHAT_TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
WAIT = 60  # seconds: the most any test waits for the server


def readable_target(tokenizer):
    """A tiny Llama whose greedy choices are whole readable tokens: a peaked head (so that the
    plausibility filter cuts something) with zero rows for tokens that decode to partial UTF-8."""
    target = tiny_llama()
    with torch.no_grad():
        target.lm_head.weight.mul_(30)
        for i in range(tokenizer.vocab_size if hasattr(tokenizer, "vocab_size") else 320):
            if "\ufffd" in tokenizer.decode([i]):
                target.lm_head.weight[i] = 0
    return target


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("serve")
    target = readable_target(tokenizer)
    target.save_pretrained(root / "plain")
    chat_tok = copy.deepcopy(tokenizer)
    chat_tok.chat_template = CHAT_TEMPLATE
    chat_tok.save_pretrained(root / "plain")
    assistant = build_assistant(target, num_layers=1, lora_rank=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in assistant.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    ULDForCausalLM(target, assistant, alpha=0.75).save_pretrained(root / "uld", tokenizer=tokenizer)
    return root


@pytest.fixture(scope="module")
def engines(dirs):
    made = {kind: load_engine(str(dirs / kind)) for kind in ("uld", "plain")}
    yield made
    for e in made.values():
        e.close()


def start(engine, **settings):
    return BackgroundServer(engine, ServeSettings(port=0, **settings)).start()


def client(srv, api_key="unused"):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=api_key, max_retries=0, timeout=WAIT)


@pytest.fixture(scope="module")
def server(engines):
    srv = start(engines["uld"], max_tokens=64, max_prompt_tokens=100, max_concurrent=4)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def plain_server(engines):
    srv = start(engines["plain"])
    yield srv
    srv.stop()


def raw(url, body=None, headers=None):
    """(status, parsed JSON) of a plain HTTP request (GET without a body, POST with one)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def uld_generate(model_dir, question, n, capsys):
    assert main(["generate", "--model", str(model_dir), "--prompt", question, "--max-new-tokens", str(n)]) == 0
    return capsys.readouterr().out[:-1]  # one completion and a newline


def chat(c, model="uld", **kw):
    kw.setdefault("messages", [{"role": "user", "content": QUESTION}])
    return c.chat.completions.create(model=model, **kw)


# -- answers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["uld", "plain"])
def test_greedy_chat_equals_uld_generate(dirs, server, plain_server, capsys, kind):
    """temperature 0 is greedy; the ULD dir has no chat template (TOFU's [INST] format, as in
    `uld generate`), the plain dir's tokenizer has one (applied by both)."""
    expected = uld_generate(dirs / kind, QUESTION, 12, capsys)
    assert len(expected) > 5
    srv = server if kind == "uld" else plain_server
    r = chat(client(srv), model=kind, temperature=0, max_tokens=12)
    assert r.choices[0].message.content == expected
    assert r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length"
    prompt = "[INST] Where was the author born? [/INST]" if kind == "uld" else f"<s>user: {QUESTION}\nassistant:"
    tok = srv._server.config.app.state.engine.tokenizer
    n_prompt = len(tok(prompt, add_special_tokens=kind == "uld")["input_ids"])
    assert r.usage.prompt_tokens == n_prompt and r.usage.total_tokens == n_prompt + 12


def test_greedy_completion_of_raw_text_equals_uld_generate(dirs, server, capsys):
    expected = uld_generate(dirs / "uld", QUESTION, 10, capsys)
    r = client(server).completions.create(model="uld", prompt=f"[INST] {QUESTION} [/INST]", temperature=0,
                                          max_tokens=10)
    assert r.choices[0].text == expected and r.object == "text_completion"


def test_streaming_yields_the_same_text(server):
    c = client(server)
    whole = chat(c, temperature=0, max_tokens=20).choices[0].message.content
    chunks = list(chat(c, temperature=0, max_tokens=20, stream=True, stream_options={"include_usage": True}))
    deltas = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert "".join(deltas) == whole and len(deltas) > 3  # really streamed, not one block
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20

    text = c.completions.create(model="uld", prompt="The quick", temperature=0, max_tokens=20).choices[0].text
    parts = [ch.choices[0].text for ch in c.completions.create(model="uld", prompt="The quick", temperature=0,
                                                                max_tokens=20, stream=True)]
    assert "".join(parts) == text and len([p for p in parts if p]) > 3


def test_stop_string_ends_the_text_and_is_not_returned(server):
    c = client(server)
    full = chat(c, temperature=0, max_tokens=30).choices[0].message.content
    stop = full[6:9]
    cut = full[: full.index(stop)]
    r = chat(c, temperature=0, max_tokens=30, stop=[stop, "never-seen"])
    assert r.choices[0].message.content == cut and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 30
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chat(c, temperature=0, max_tokens=30, stop=stop,
                                                                        stream=True))
    assert streamed == cut


def test_sampling_parameters_are_honoured(dirs, server):
    """The server's sample equals `generate` with the same seed, temperature, top_p and top_k."""
    from uld.models.loading import load_model

    model, tok = load_model(dirs / "uld")
    ids = tok(f"[INST] {QUESTION} [/INST]", return_tensors="pt")["input_ids"]
    torch.manual_seed(7)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=True,
                         temperature=1.7, top_p=0.9, top_k=40, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    expected = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    c = client(server)
    texts = [chat(c, temperature=1.7, top_p=0.9, seed=7, max_tokens=12, extra_body={"top_k": 40})
             .choices[0].message.content for _ in range(2)]
    assert texts == [expected, expected]


def test_models_lists_the_served_id(server):
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["uld"]
    assert c.models.retrieve("uld").id == "uld"


def test_engine_holds_back_a_possible_stop_string_and_partial_characters(engines):
    """Streaming never emits text that a later token could turn into a stop string."""
    engine = engines["uld"]
    full = engine.generate(engine.text_prompt_ids("The quick"), SamplingParams(max_tokens=25, temperature=0)).text
    stop = full[10:14] + "\u2603"  # starts like the text, never completes
    deltas = []
    res = engine.generate(engine.text_prompt_ids("The quick"), SamplingParams(max_tokens=25, temperature=0,
                                                                             stop=(stop,)), on_text=deltas.append)
    assert "".join(deltas) == res.text == full and res.finish_reason == "length"


# -- bad requests ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(temperature=5), "BadRequestError", "temperature: Input should be less than or equal to 2"),
        (dict(n=2), "BadRequestError", "not supported by this server: n=2"),
        (dict(logprobs=True), "BadRequestError", "not supported by this server: logprobs"),
        (dict(frequency_penalty=0.5), "BadRequestError", "presence_penalty / frequency_penalty"),
        (dict(messages=[]), "BadRequestError", "messages: List should have at least 1 item"),
        (dict(messages=[{"role": "wizard", "content": "x"}]), "BadRequestError", "messages.0.role"),
        (dict(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}]),
         "BadRequestError", "no chat template"),
        (dict(stop=["a", "b", "c", "d", "e"]), "BadRequestError", "stop takes at most 4 strings"),
        (dict(max_tokens=0), "BadRequestError", "max_tokens: Input should be greater than or equal to 1"),
        (dict(model="gpt-4o"), "NotFoundError", "model 'gpt-4o' is not served here; this server serves 'uld'"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(server, kwargs, error, message):
    with pytest.raises(getattr(openai, error)) as e:
        chat(client(server), **kwargs)
    assert message in str(e.value)
    assert 400 <= e.value.status_code < 500


def test_invalid_json_and_context_overflow_are_400(server, engines):
    status, body = raw(server.url + "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["message"] == "the request body is not valid JSON"
    ctx = engines["uld"].context_length
    assert ctx == 256  # tiny_llama's max_position_embeddings
    srv = start(engines["uld"], max_tokens=1000)
    try:
        with pytest.raises(openai.BadRequestError, match=r"context is 256 tokens: the prompt \(16\) plus max_tokens \(250\)"):
            chat(client(srv), max_tokens=250)
    finally:
        srv.stop()


# -- security ----------------------------------------------------------------------------------------
def test_binds_loopback_by_default():
    import inspect

    from uld.cli.serve import serve_command

    assert ServeSettings().host == "127.0.0.1"
    assert inspect.signature(serve_command).parameters["host"].default.default == "127.0.0.1"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_need_no_key(host):
    assert is_loopback(host)
    ServeSettings(host=host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "example.com", "myhost"])
def test_other_hosts_are_refused_without_a_key(dirs, capsys, monkeypatch, host):
    monkeypatch.delenv("ULD_API_KEY", raising=False)
    with pytest.raises(UldError, match="refusing to bind"):
        ServeSettings(host=host)
    ServeSettings(host=host, api_key="s3cret")  # accepted with a key (nothing is bound here)
    # The CLI refuses before loading the model: exit 2 with one sentence.
    assert main(["serve", "--model", str(dirs / "uld"), "--host", host]) == 2
    assert f"refusing to bind {host!r} without an API key" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--device", "gpu"], "--device 'gpu' is not a torch device"),
    (["--device", "cuda:7"], "--device 'cuda:7'"),
    (["--max-tokens", "0"], "--max-tokens must be at least 1, got 0"),
    (["--port", "70000"], "--port must be in 0..65535, got 70000"),
])
def test_bad_serve_options_are_refused_before_the_model_loads(dirs, capsys, monkeypatch, extra, message):
    import uld.serve.server

    monkeypatch.setattr(uld.serve.server, "load_engine", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["serve", "--model", str(dirs / "uld"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_api_key_is_required_when_set(engines, monkeypatch):
    from uld.serve.server import api_key_from_env

    monkeypatch.setenv("ULD_API_KEY", "from-env")
    assert api_key_from_env(None) == "from-env" and api_key_from_env("given") == "given"
    srv = start(engines["uld"], api_key="s3cret")
    try:
        with pytest.raises(openai.AuthenticationError, match="a wrong API key: send 'Authorization: Bearer <key>'"):
            chat(client(srv, api_key="unused"), max_tokens=2)
        status, body = raw(srv.url + "/v1/completions", json.dumps({"model": "uld", "prompt": "x"}).encode())
        assert status == 401 and body["error"]["message"].startswith("no API key")
        assert raw(srv.url + "/v1/models")[0] == 401
        assert raw(srv.url + "/health") == (200, {"status": "ok"})
        assert chat(client(srv, api_key="s3cret"), max_tokens=2).usage.completion_tokens == 2
    finally:
        srv.stop()


def test_prompt_length_and_max_tokens_are_capped(server):
    c = client(server)
    with pytest.raises(openai.APIStatusError) as e:
        chat(c, messages=[{"role": "user", "content": "word " * 200}])
    assert e.value.status_code == 413 and "this server accepts at most 100" in str(e.value)
    with pytest.raises(openai.APIStatusError) as e:
        chat(c, max_tokens=65)
    assert e.value.status_code == 413 and "max_tokens=65 exceeds this server's limit of 64" in str(e.value)


def test_request_bodies_are_capped_before_parsing(engines):
    """Declared (Content-Length) and chunked bodies alike: 413 past the limit. The bodies stay
    small enough for the sockets' buffers, so the client is never cut off mid-upload."""
    import http.client

    srv = start(engines["uld"], max_body_bytes=2000)
    try:
        body = json.dumps({"model": "uld", "prompt": "x" * 3000}).encode()
        status, answer = raw(srv.url + "/v1/completions", body)
        assert status == 413 and answer["error"]["message"] == "the request body exceeds this server's limit of 2000 bytes"
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=WAIT)
        try:
            conn.request("POST", "/v1/completions", body=iter([body[:1500], body[1500:]]),
                         headers={"content-type": "application/json"}, encode_chunked=True)
            r = conn.getresponse()
            assert r.status == 413 and b"limit of 2000 bytes" in r.read()
        finally:
            conn.close()
        ok = json.dumps({"model": "uld", "prompt": "x" * 100, "max_tokens": 2}).encode()
        assert raw(srv.url + "/v1/completions", ok)[0] == 200
    finally:
        srv.stop()


def hold_after_first_token(engine):
    """Make the engine wait (bounded) after its first token until `release` is set."""
    release, waiting = threading.Event(), threading.Event()

    def hook(tracker):
        if len(tracker.ids) == 1:
            waiting.set()
            release.wait(WAIT)
    engine.on_token = hook
    return release, waiting


def test_concurrent_requests_beyond_the_limit_get_429(engines):
    engine = engines["uld"]
    srv = start(engine, max_concurrent=1)
    release, waiting = hold_after_first_token(engine)
    try:
        c = client(srv)
        stream = chat(c, max_tokens=5, temperature=0, stream=True)
        assert waiting.wait(WAIT)  # the first request holds the only slot
        with pytest.raises(openai.RateLimitError, match="the server is busy: 1 requests are running or waiting"):
            chat(c, max_tokens=2)
        release.set()
        assert len(list(stream)) > 1
        engine.on_token = None
        assert chat(c, max_tokens=2).usage.completion_tokens == 2
    finally:
        engine.on_token = None
        release.set()
        srv.stop()


def test_server_survives_a_client_that_disconnects_mid_stream(engines, server):
    """The client reads one chunk and hangs up; decoding stops at the next token (the engine
    waits until the server has seen the disconnect) and the next request is answered normally."""
    engine = engines["uld"]
    results = []
    cancelled = threading.Event()

    def hook(tracker):
        if len(tracker.ids) == 1 and tracker.cancel is not None and tracker.cancel.wait(WAIT):
            cancelled.set()
    engine.on_token = hook
    try:
        c = client(server)
        expected = chat(c, temperature=0, max_tokens=40).choices[0].message.content
        stream = chat(c, temperature=0, max_tokens=60, stream=True, extra_body={"ignore_eos": True})
        next(iter(stream))
        stream.close()
        assert cancelled.wait(WAIT)
        slots = server._server.config.app.state.slots
        results.append(chat(c, temperature=0, max_tokens=40).choices[0].message.content)
        assert results == [expected] and slots.used == 0
    finally:
        engine.on_token = None


def test_request_names_no_path_the_server_opens(dirs, server, monkeypatch):
    """A model name that is a real model directory is refused like any other unknown name, and
    nothing is loaded while serving."""
    import uld.models.loading as loading

    def fail(*a, **k):
        raise AssertionError("a request made the server load a model")
    monkeypatch.setattr(loading, "load_model", fail)
    monkeypatch.setattr(loading, "load_causal_lm", fail)
    for name in (str(dirs / "plain"), str(dirs / "uld"), "../plain"):
        with pytest.raises(openai.NotFoundError, match="is not served here"):
            chat(client(server), model=name, max_tokens=2)
        with pytest.raises(openai.NotFoundError):
            client(server).models.retrieve(name)


def test_prompt_text_is_logged_only_when_asked(engines, caplog):
    secret = "Zanzibar-7781"
    messages = [{"role": "user", "content": f"What about {secret}?"}]
    for log_prompts in (False, True):
        srv = start(engines["uld"], log_prompts=log_prompts)
        try:
            with caplog.at_level(logging.DEBUG):
                caplog.clear()
                chat(client(srv), messages=messages, max_tokens=3)
                chat(client(srv), messages=messages, max_tokens=3, stream=True).close()
                text = caplog.text
        finally:
            srv.stop()
        assert "prompt + " in text  # sizes are logged either way
        assert (secret in text) == log_prompts


def test_engine_is_usable_without_http(engines):
    engine: Engine = engines["uld"]
    got = engine.generate(engine.chat_prompt_ids([{"role": "user", "content": QUESTION}]),
                          SamplingParams(max_tokens=4, temperature=0))
    assert got.completion_tokens == 4 and got.finish_reason == "length" and got.prompt_tokens == 16


def test_a_taken_port_is_one_sentence(engines):
    from uld.serve.server import bind

    taken = bind("127.0.0.1", 0)
    taken.listen()
    try:
        with pytest.raises(UldError, match=f"cannot listen on 127.0.0.1:{taken.getsockname()[1]}"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_the_uld_serve_command_answers_the_openai_client(dirs, capsys):
    """`uld serve` as a user runs it: a subprocess on 127.0.0.1, polled (bounded) until it
    answers, then stopped."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:  # a free port (released just before the server takes it)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    expected = uld_generate(dirs / "uld", QUESTION, 8, capsys)
    cmd = [sys.executable, "-c", "import sys; from uld.cli import main; sys.exit(main())", "serve",
           "--model", str(dirs / "uld"), "--port", str(port), "--served-model-name", "mine"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if raw(f"http://127.0.0.1:{port}/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "uld serve did not answer within 180 s"
            time.sleep(0.2)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=WAIT)
        assert [m.id for m in c.models.list().data] == ["mine"]
        r = chat(c, model="mine", temperature=0, max_tokens=8)
        assert r.choices[0].message.content == expected
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    err = proc.stderr.read()
    assert f"serving 'mine' at http://127.0.0.1:{port}/v1" in err
    assert QUESTION not in err  # no prompt text in the log
