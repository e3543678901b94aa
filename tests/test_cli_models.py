"""Every command on every kind of MODEL: a zoo name, a user's file.py:function, a graph JSON, an ONNX
file; the --json documents' content; the usage (exit 2) and failure (exit 1) paths, without tracebacks."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import backends
from graphdsl.cli import main

HERE = Path(__file__).parent
USER = f"{HERE / 'user_models.py'}:classifier"
from tests import user_models  # noqa: E402


def cli(*args, code: int = 0) -> str:
    out = CliRunner().invoke(main, [str(a) for a in args], env={"GRAPHDSL_PROGRESS": "0"})
    assert out.exit_code == code, out.output + repr(out.exception)
    assert "Traceback" not in out.output
    return out.output


def cli_json(*args) -> dict:
    return json.loads(cli(*args, "--json"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The user's classifier as a graph JSON + weights, as an ONNX file, and its training data."""
    root = tmp_path_factory.mktemp("user")
    graph, params = user_models.classifier()
    graph.save(root / "classifier.json")
    np.savez(root / "weights.npz", **params)
    np.savez(root / "data.npz", **user_models.classifier_data())
    cli("export", USER, "-o", root / "classifier.onnx")
    return root


def reference(graph, feed):
    return backends.compile(graph, "numpy")(feed)


# -- passes ------------------------------------------------------------------------------------------
def test_passes_on_a_user_file_a_json_and_an_onnx_file(files):
    for model in (USER, files / "classifier.json", files / "classifier.onnx"):
        doc = cli_json("passes", model)
        assert doc["final_ops"]["attention"] == 1, model
        assert "softmax" not in doc["final_ops"], model
        assert doc["graph_kind"] == "forward" and doc["level"] == 2


def test_passes_on_a_user_graph_train_needs_a_loss(files):
    doc = cli_json("passes", USER, "--graph", "train")
    assert doc["final_ops"]["attention"] == 1 and doc["final_ops"]["attention_grad"] >= 1
    out = cli("passes", f"{HERE / 'user_models.py'}:lm", "--graph", "train", code=1)
    assert "training needs a scalar output named 'loss'" in out and "logits" in out


# -- compile, run --------------------------------------------------------------------------------------
def test_compile_a_user_model_with_its_weights_then_run_it_with_nothing_else(tmp_path):
    doc = cli_json("compile", USER, "-o", tmp_path / "mine", "--weights")
    assert doc["weights_bundled"] is True and doc["target"] == "llvm" and doc["cache"] in ("miss", "memory", "disk")
    assert (tmp_path / "mine" / "weights.safetensors").exists()
    feed = {k: v[:4] for k, v in user_models.classifier_data().items()}
    np.savez(tmp_path / "x.npz", **feed)
    run = cli_json("run", tmp_path / "mine", "--inputs", tmp_path / "x.npz", "-o", tmp_path / "y.npz")
    assert run["outputs"]["logits"]["shape"] == [4, 3] and run["inputs"] == {"ids": [4, 8], "labels": [4]}
    graph, params = user_models.classifier()
    want = reference(graph, {**feed, **params})
    got = dict(np.load(tmp_path / "y.npz"))
    np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-5)
    np.testing.assert_allclose(got["loss"], want["loss"], atol=1e-5)
    exe = backends.load(tmp_path / "mine")                 # the Python API: weights bound
    np.testing.assert_allclose(exe(feed)["logits"], want["logits"], atol=1e-5)


def test_compile_a_graph_json_with_a_weights_file_and_refuse_a_foreign_directory(files, tmp_path):
    out = cli("compile", files / "classifier.json", "-o", tmp_path / "j", "--weights", files / "weights.npz")
    assert "weights bundled: " in out
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    out = cli("compile", files / "classifier.json", "-o", keep, code=1)
    assert "notes.txt" in out and "never deletes" in out
    assert (keep / "notes.txt").read_text() == "mine"
    out = cli("run", tmp_path / "j", "--dim", "batch=3", "--json")
    assert json.loads(out)["outputs"]["logits"]["shape"] == [3, 3]


def test_run_without_weights_says_so(files, tmp_path):
    cli("compile", files / "classifier.json", "-o", tmp_path / "bare")
    out = cli("run", tmp_path / "bare", code=1)
    assert "compiled without weights" in out and "--weights" in out
    out = cli("run", tmp_path / "bare", "--weights", files / "weights.npz", "--json")
    assert "logits" in json.loads(out)["outputs"]


# -- compare -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["user", "json", "onnx"])
def test_compare_any_model_kind_on_numpy_and_llvm(files, kind):
    model = {"user": USER, "json": files / "classifier.json", "onnx": files / "classifier.onnx"}[kind]
    extra = ["--weights", files / "weights.npz"] if kind == "json" else []
    doc = cli_json("compare", model, "--targets", "numpy,llvm", "--repeat", "1", *extra)
    assert doc["ok"] is True and set(doc["targets"]) == {"numpy", "llvm"}
    assert doc["targets"]["llvm"]["outputs"]["logits"]["max_abs"] < 1e-4


def test_compare_a_json_graph_without_weights_asks_for_them(files):
    out = cli("compare", files / "classifier.json", code=1)
    assert "needs the values of its" in out and "--weights" in out


@pytest.mark.parametrize("args, code, message", [
    (["compare", "bert-tiny", "--targets", "numpy,tpu"], 2, "unknown target 'tpu'"),
    (["compare", "bert-tiny", "--targets", ""], 2, "give at least one target"),
    (["compare", "bert-tiny", "--targets", " , "], 2, "give at least one target"),
    (["compare", "bert-tiny", "--repeat", "-1"], 2, "--repeat"),
    (["compare", "bert-tiny", "--batch", "0"], 2, "--batch"),
    (["compare", "no-such-model"], 1, "unknown model 'no-such-model'"),
    (["compile", "no-such-model", "-o", "x"], 1, "unknown model 'no-such-model'"),
    (["demo", "--model", "no-such-model"], 1, "unknown model 'no-such-model'"),
    (["compare", "bert-tiny", "--dim", "batch"], 2, "NAME=SIZE"),
    (["train", "bert-tiny", "--target", "tpu"], 2, "unknown target 'tpu'"),
    (["train", "bert-tiny", "--every", "5"], 2, "--every needs --save"),
    (["passes", "missing.json"], 1, "does not exist"),
    (["passes", "model.py"], 1, "name the function"),
])
def test_usage_errors_exit_2_and_failures_exit_1_in_one_paragraph(args, code, message):
    out = cli(*args, code=code)
    assert message in out
    assert len(out.strip().splitlines()) <= 6


def test_cuda_without_a_gpu_is_refused_before_compiling():
    from backends.tvm import cache
    from backends.tvm.cuda import gpu_available
    if gpu_available():
        pytest.skip("this machine has a GPU")
    before = cache.STATS["compiles"]
    out = cli("compare", "bert-tiny", "--targets", "numpy,cuda", code=1)
    assert "NVIDIA GPU" in out and "compile MODEL --target cuda" in out
    assert cache.STATS["compiles"] == before


def test_user_code_errors_name_the_users_line():
    out = cli("passes", f"{HERE / 'user_models.py'}:raises", code=1)
    assert "KeyError" in out and "user_models.py:" in out and 'return {}["missing"]' in out
    out = cli("passes", f"{HERE / 'user_models.py'}:not_a_graph", code=1)
    assert "returned int, not a Graph" in out
    out = cli("passes", f"{HERE / 'user_models.py'}:nope", code=1)
    assert "has no function 'nope'" in out and "classifier" in out


def test_debug_shows_the_traceback():
    out = CliRunner().invoke(main, ["--debug", "passes", "no-such-model"])
    assert out.exit_code == 1 and out.exception is not None and "no-such-model" in str(out.exception)


# -- export, optimize ----------------------------------------------------------------------------------
def test_export_contrib_ops_emits_multi_head_attention(tmp_path):
    import onnx
    out = cli("export", "bert-tiny", "-o", tmp_path / "b.onnx", "--contrib-ops")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "b.onnx")).graph.node]
    assert ops.count("MultiHeadAttention") == 2 and "2 MultiHeadAttention" in out


def test_optimize_onnx_in_onnx_out_with_contrib_ops(files, tmp_path):
    import onnx
    ort = pytest.importorskip("onnxruntime")
    out_path = tmp_path / "opt.onnx"
    doc = cli_json("optimize", files / "classifier.onnx", "-o", out_path, "--contrib-ops")
    assert doc["multi_head_attention"] == 1 and doc["final_ops"]["attention"] == 1
    assert [n.op_type for n in onnx.load(str(out_path)).graph.node].count("MultiHeadAttention") == 1
    feed = {k: v[:2] for k, v in user_models.classifier_data().items()}
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["logits"], feed)[0]  # noqa: E731
    np.testing.assert_allclose(run(out_path), run(files / "classifier.onnx"), atol=1e-4)


def test_optimize_json_in_json_out(files, tmp_path):
    from graphdsl.graph import Graph
    out = cli("optimize", files / "classifier.json", "-o", tmp_path / "opt.json")
    assert "fuse_attention" in out and "wrote" in out
    assert Graph.load(tmp_path / "opt.json").op_counts()["attention"] == 1
    assert "--contrib-ops" in cli("optimize", files / "classifier.json", "-o", tmp_path / "x.json",
                                  "--contrib-ops", code=2)


# -- train ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["numpy", "llvm"])
def test_train_a_user_model_the_loss_falls(files, target, tmp_path):
    doc = cli_json("train", USER, "--data", files / "data.npz", "--target", target, "--steps", "30",
                   "--batch", "16", "--lr", "3e-3", "--save", tmp_path / "ckpt", "--every", "10")
    assert doc["steps"] == 30 and doc["end_step"] == 30 and doc["checkpoint"] == str(tmp_path / "ckpt")
    assert np.mean(doc["losses"][-5:]) < 0.6 * np.mean(doc["losses"][:5]), doc["losses"]
    assert doc["first_loss"] == doc["losses"][0] and doc["final_loss"] == doc["losses"][-1]
    assert doc["tokens_per_s"] > 0 and doc["fused"]["attention"] == 1 and doc["opt_level"] == 2
    again = cli_json("train", USER, "--data", files / "data.npz", "--target", target, "--steps", "5",
                     "--batch", "16", "--resume", tmp_path / "ckpt")
    assert again["start_step"] == 30 and again["end_step"] == 35
    out = cli("train", USER, "--data", files / "data.npz", "--target", target, "--steps", "5", "--batch", "16",
              "--resume", tmp_path / "ckpt", "--lr", "0.5", code=1)
    assert "lr=0.003" in out and "lr=0.5" in out


def test_train_a_zoo_model_json(tmp_path):
    doc = cli_json("train", "bert-tiny", "--steps", "4", "--batch", "4")
    assert {"first_loss", "final_loss", "steps", "tokens_per_s", "checkpoint"} <= set(doc)
    assert doc["steps"] == 4 and doc["checkpoint"] is None and doc["fused"]["attention"] == 2
    assert doc["fused"]["softmax"] <= 2         # the two cross-entropies' own, none in attention


def test_train_a_user_graph_needs_data():
    out = cli("train", USER, "--steps", "2", code=2)
    assert "--data file.npz" in out and "ids: i64[batch,8]" in out


# -- generate ------------------------------------------------------------------------------------------
def test_generate_with_a_zoo_gpt_greedy_and_beam():
    doc = cli_json("generate", "gpt-tiny", "--prompt", "Anna went", "--max-new-tokens", "4")
    assert doc["family"] == "gpt" and len(doc["completions"]) == 1 and len(doc["ids"][0]) <= 3 + 4
    beams = cli_json("generate", "gpt-tiny", "--prompt", "Anna went", "--max-new-tokens", "4", "--beam", "3")
    assert len(beams["completions"]) == 3 and beams["scores"] == sorted(beams["scores"], reverse=True)
    text = cli("generate", "gpt-tiny", "--prompt", "Anna went", "--max-new-tokens", "4")
    assert text.startswith("Anna went")


def test_generate_with_a_checkpoint_equals_the_api(tmp_path):
    from models import decoding, gpt
    from models.data.tokenizer import load_tokenizer
    import models
    cli("train", "gpt-tiny", "--steps", "3", "--batch", "4", "--save", tmp_path / "ckpt")
    doc = cli_json("generate", "gpt-tiny", "--checkpoint", tmp_path / "ckpt", "--prompt", "Anna", "--max-new-tokens", "3")
    tok = load_tokenizer()
    model = models.get("gpt-tiny").module().eval()
    from models.checkpoint import read_params
    params = read_params(tmp_path / "ckpt")
    step = gpt.gpt_step(model, params)
    want = decoding.greedy(lambda i, c: _masked(step(i, c), tok.vocab_size), np.array([[tok.bos_id, *tok.encode("Anna")]]), 3,
                           eos_id=tok.eos_id)
    assert doc["ids"][0] == want[0].tolist()


def _masked(result, size):
    log_probs, cache = result
    log_probs = log_probs.copy()
    log_probs[..., size:] = -np.inf
    return log_probs, cache


def test_generate_with_bart_and_with_a_user_lm():
    doc = cli_json("generate", "bart-tiny", "--prompt", "the red ball", "--max-new-tokens", "3")
    assert doc["family"] == "bart" and len(doc["new_tokens"]) == 1
    doc = cli_json("generate", f"{HERE / 'user_models.py'}:lm", "--prompt", "Anna went", "--max-new-tokens", "3")
    assert doc["family"] == "user" and doc["new_tokens"][0] <= 3
    out = cli("generate", "bert-tiny", "--prompt", "x", code=1)
    assert "does not generate text" in out
    out = cli("generate", "--prompt", "x", code=2)
    assert "--hf" in out


# -- demo --------------------------------------------------------------------------------------------
def test_demo_json():
    doc = cli_json("demo", "--steps", "60", "--batch", "16")
    assert doc["backends_agree"] is True and doc["attention_fused"] == 2
    assert doc["final_loss_mean"] < doc["first_loss_mean"] - 0.5
    assert doc["first_loss"] == doc["losses"][0] and len(doc["losses"]) == 60


# -- the same commands on a graph JSON and an ONNX file -----------------------------------------------
@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    """The user's causal LM as a graph JSON + weights and as an ONNX file."""
    root = tmp_path_factory.mktemp("lm")
    graph, params = user_models.lm()
    graph.save(root / "lm.json")
    np.savez(root / "lm_weights.npz", **params)
    cli("export", f"{HERE / 'user_models.py'}:lm", "-o", root / "lm.onnx")
    return root


@pytest.mark.parametrize("kind", ["json", "onnx"])
def test_compile_export_train_on_a_json_and_an_onnx_file(files, kind, tmp_path):
    model = files / f"classifier.{kind}"
    weights = ["--weights", files / "weights.npz"] if kind == "json" else []
    doc = cli_json("compile", model, "-o", tmp_path / "c", "--weights", *weights[1:])
    assert doc["weights_bundled"] is True
    feed = {k: v[:2] for k, v in user_models.classifier_data().items()}
    graph, params = user_models.classifier()
    want = reference(graph, {**feed, **params})["logits"]
    np.testing.assert_allclose(backends.load(tmp_path / "c")(feed)["logits"], want, atol=1e-5)
    out = cli_json("export", model, "-o", tmp_path / "again.onnx", *weights)
    assert out["initializers"] >= len(graph.params) and out["outputs"]["logits"] == "f32[batch,3]"
    trained = cli_json("train", model, "--data", files / "data.npz", "--steps", "20", "--batch", "16",
                       "--lr", "3e-3", *weights)
    assert np.mean(trained["losses"][-5:]) < np.mean(trained["losses"][:5])


@pytest.mark.parametrize("kind", ["json", "onnx"])
def test_generate_from_a_json_and_an_onnx_lm_equals_the_python_one(lm_files, kind):
    py = cli_json("generate", f"{HERE / 'user_models.py'}:lm", "--prompt", "Anna went", "--max-new-tokens", "3")
    weights = ["--weights", lm_files / "lm_weights.npz"] if kind == "json" else []
    doc = cli_json("generate", lm_files / f"lm.{kind}", "--prompt", "Anna went", "--max-new-tokens", "3", *weights)
    assert doc["ids"] == py["ids"] and doc["completions"] == py["completions"]


def test_import_json():
    pytest.importorskip("onnxruntime")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        cli("export", "gpt-tiny", "-o", f"{d}/g.onnx")
        doc = cli_json("import", f"{d}/g.onnx", "--dim", "batch=2")
    assert doc["check"]["ok"] is True and doc["check"]["max_abs"] < 1e-4 and doc["ops"]["softmax"] == 2


# -- Hugging Face directories ------------------------------------------------------------------------
def _hf_gpt2_dir(root):
    """A tiny random GPT-2 with a word-level tokenizer, saved the way Hugging Face ships models."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = ["<eos>", "the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<eos>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.decoder = tokenizers.decoders.WordPiece()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", bos_token="<eos>")
    config = transformers.GPT2Config(vocab_size=len(words), n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    import torch
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(root)
    fast.save_pretrained(root)
    return model, fast


def test_generate_from_a_hugging_face_directory_equals_transformers(tmp_path):
    import torch
    model, tok = _hf_gpt2_dir(tmp_path / "gpt2")
    doc = cli_json("generate", "--hf", tmp_path / "gpt2", "--prompt", "the cat", "--max-new-tokens", "5")
    ids = torch.tensor([[0] + tok.encode("the cat")])
    want = model.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0,
                          attention_mask=torch.ones_like(ids))[0].tolist()
    got = doc["ids"][0]
    assert got == want[:len(got)] and len(got) >= 3, (got, want)
    (tmp_path / "bare").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "bare" / name).write_bytes((tmp_path / "gpt2" / name).read_bytes())
    out = cli("generate", "--hf", tmp_path / "bare", "--prompt", "the cat", code=1)
    assert "no Hugging Face tokenizer could be read" in out and "--tokenizer" in out


# -- help, progress, the cache log -----------------------------------------------------------------------
def test_every_command_has_help_with_an_example():
    for name, command in main.commands.items():
        if name in ("models", "ops"):
            continue
        out = cli(name, "--help")
        assert "Example" in out, name


def test_progress_names_the_phase_on_a_terminal_only(capsys, monkeypatch):
    import time
    from graphdsl.progress import phase
    with phase("compiling 12 nodes for llvm", after=0.05, enabled=True):
        time.sleep(0.4)
    err = capsys.readouterr().err
    assert "compiling 12 nodes for llvm" in err and err.endswith("\r\x1b[K")
    monkeypatch.setenv("GRAPHDSL_PROGRESS", "0")
    with phase("quiet", after=0.0):
        time.sleep(0.1)
    assert capsys.readouterr().err == ""


def test_verbose_logs_compile_cache_hits(tmp_path):
    import subprocess
    cmd = [sys.executable, "-m", "graphdsl", "-v", "compile", USER, "-o"]
    subprocess.run(cmd + [str(tmp_path / "a")], capture_output=True, text=True, check=True)
    done = subprocess.run(cmd + [str(tmp_path / "b")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "compile cache hit on disk" in done.stderr and "from the compile cache (disk)" in done.stdout


def test_optimize_a_zoo_model_and_a_user_file(tmp_path):
    from graphdsl.graph import Graph
    doc = cli_json("optimize", "bert-tiny", "-o", tmp_path / "bert.json")
    assert doc["final_ops"]["attention"] == 2 and (tmp_path / "bert.npz").exists()
    fused = Graph.load(tmp_path / "bert.json")
    import models
    spec = models.get("bert-tiny")
    module = spec.module().eval()
    feed = {k: v for k, v in spec.example_batch(2).items() if k in fused.inputs}
    want = reference(spec.forward(module), {**feed, **module.init(seed=0)})
    got = reference(fused, {**feed, **dict(np.load(tmp_path / "bert.npz"))})
    np.testing.assert_allclose(got["mlm_logits"], want["mlm_logits"], atol=1e-5)
    doc = cli_json("optimize", USER, "-o", tmp_path / "mine.onnx", "--contrib-ops")
    assert doc["multi_head_attention"] == 1
