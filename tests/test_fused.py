"""The fused decode step (pete_osc/engines/fused.py), the kernels the CUDA path runs, here
through Triton's interpreter on the CPU: the same answers as transformers' own step, over
a static cache shared with transformers' prefill and forced runs, and the work done; and
the batch's fused step (pete_osc/engines/fused_rows.py), the same answers as each frame
alone. Every load and store of every kernel is checked to stay inside the tensors it was
given (tests/support/bounds.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.answers import answer

from pete_osc.engines.base import GenerationSettings

pytest.importorskip("triton", reason="Triton is not installed (pip install 'pete-osc[dev]')")
ROOT = Path(__file__).resolve().parent.parent


def frames(n=2):
    rng = np.random.default_rng(11)
    return [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(n)]


def answers(engine, images):
    out = []
    for image in images:
        times = answer(engine, image)
        tokens = times.tokens
        out.append(("".join(t.text for t in tokens), tokens[-1].finish, times.steps))
    return out


@pytest.mark.parametrize("constrained", [False, True], ids=["free", "grammar+jump-forward"])
def test_fused_steps_answer_as_transformers_steps(tiny_torch_model, constrained):
    """Greedy answers with the fused step equal those of transformers' step, frame after
    frame, over one static cache; with the grammar, the forced runs (the batch's fused
    kernels as one row) and the fused single steps take turns on it. Every single-token
    step and every forced run ran fused (transformers ran the prefills only), and their
    logits match transformers' closely. (Run in
    a process of its own: Triton's interpreter must be chosen before Triton is imported.)"""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}",
               PETE_OSC_TRY="fused-forced")  # (off unless asked: see torch_setup.TRY)
    proc = subprocess.run([sys.executable, __file__, str(tiny_torch_model), str(constrained)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("fused steps agree")


def test_the_paths_not_yet_run_on_a_gpu_are_off_unless_asked(monkeypatch):
    """The fused forced runs and the single frame's vision graph ended the process on an
    H100 (session 16): a show keeps transformers' padded pass and the compiled tower
    unless PETE_OSC_TRY names them."""
    from types import SimpleNamespace

    from pete_osc.engines import torch_setup

    monkeypatch.delenv(torch_setup.TRY, raising=False)
    engine = SimpleNamespace(_fused=object())
    assert torch_setup.fused_forced(engine) is None
    compiled = lambda fn: ("compiled", fn)  # noqa: E731
    assert torch_setup.vision(None, print, compiled) == ("compiled", print)
    monkeypatch.setenv(torch_setup.TRY, "vision-graph")
    assert isinstance(torch_setup.vision(None, print, compiled), torch_setup.Graphed)
    assert torch_setup.fused_forced(engine) is None  # not named
    monkeypatch.setenv(torch_setup.TRY, "vision-graph,fused-forced")
    monkeypatch.setattr(torch_setup, "FusedForced", lambda engine, decoder: ("built", decoder))
    assert torch_setup.fused_forced(engine) == ("built", engine._fused)


def test_a_recorded_forced_run_keeps_every_tensor_it_reads(tiny_torch_model, monkeypatch):
    """On CUDA each forced-run width is one recorded graph, which reads its inputs' memory
    at every replay: every tensor given to the kernels while recording must live as long
    as the graph. (Session 16's H100 run: the row's slot index was a temporary, its memory
    soon another tensor's, and the kernels wrote the keys wherever that pointed: an
    illegal memory access.) The recording is stood in for here; what it would read is
    checked, by weak references, after the runs and a collection."""
    import gc
    import weakref

    import torch

    from pete_osc.director.schema import load_director
    from pete_osc.engines import torch_setup
    from pete_osc.engines.torch_engine import TorchEngine

    monkeypatch.setenv(torch_setup.TRY, "fused-forced")
    director = load_director(ROOT / "DIRECTOR.md")
    engine = TorchEngine(str(tiny_torch_model), director.prompt, director.instruction,
                         GenerationSettings(16, 0.0, 64), static=True, kernels="fused",
                         weights="off")
    forced = engine._forced
    forced.bind(engine.cache)
    forced.graph = True  # (as on CUDA)
    read = []

    def forward(*tensors):
        read.extend(weakref.ref(t) for t in tensors)
        return torch.zeros(1, forced.kernels.vocab)

    class Recorded:
        replays = 0

        def replay(self):
            Recorded.replays += 1

    monkeypatch.setattr(forced.kernels, "forward", forward)
    monkeypatch.setattr(torch_setup, "record", lambda torch, body: (Recorded(), body()))
    for ids in ([5, 9], [5, 9, 11], [5] * 7, [5, 9]):
        forced.run(ids, engine.prefix_len)
    gc.collect()
    assert sorted(forced.graphs) == [2, 4, 8] and Recorded.replays == 4
    assert len(read) == 12 and all(ref() is not None for ref in read), \
        [i % 4 for i, ref in enumerate(read) if ref() is None]


def check(model: str, constrained: bool) -> None:
    import torch

    from pete_osc.director.schema import load_director
    from pete_osc.engines import fused as interpreted
    from pete_osc.engines.torch_engine import TorchEngine

    director = load_director(ROOT / "DIRECTOR.md")

    results, passes = {}, {}
    for kernels in ("off", "fused"):
        engine = TorchEngine(model, director.prompt, director.instruction,
                             GenerationSettings(16, 0.0, 64), static=True, kernels=kernels,
                             weights="off")
        if constrained:
            engine.constrain(director)
        seen: list[int] = []
        engine.model.model.language_model.register_forward_pre_hook(
            lambda m, a, kw: seen.append((kw.get("input_ids") if kw.get("input_ids") is not None
                                          else kw["inputs_embeds"]).shape[1]), with_kwargs=True)
        results[kernels] = answers(engine, frames())
        passes[kernels] = list(seen)
        if kernels == "fused":
            assert isinstance(engine._fused, interpreted.FusedDecoder)
            steps = sum(r[2] for r in results[kernels])
            # transformers ran the prefills only (no pass of one token, no forced run);
            # every single-token step was fused, every forced run too
            assert 1 not in passes[kernels] and engine.fused_steps > 0
            if not constrained:
                assert engine.fused_steps == steps and engine._forced.kernels.calls == 0
            else:  # forced runs (the batch's kernels, one row) took turns with the fused steps
                assert engine._forced.kernels.calls > 0 and 8 not in passes[kernels]
                assert 8 in passes["off"]
            # one more step from the same point: fused logits against transformers' own
            position = engine.prefix_len + 1 + engine._suffix.shape[1] + 3
            with torch.inference_mode():
                engine._rewind(to=position)
                reference = engine._decode_step(torch.tensor([[5]]), torch.tensor([position])).clone()
                fused = engine._fused.step(5, position).clone()
            cos = torch.nn.functional.cosine_similarity(reference.float(), fused, dim=-1)
            assert float(cos) > 0.99999 and torch.allclose(reference.float(), fused, atol=1e-4)
            # and the fused step left transformers' write position after it
            assert all(int(layer.cumulative_length) == position + 1
                       for layer in engine.cache.layers)
            # other launch shapes (down's K in fp32 parts added by a second kernel, the
            # attention merged before o, more attention blocks, other rows per program):
            # the same step, the same logits
            engine._fused.reshape(down_parts=4, splits=16, down_rows=2, down_block=256,
                                  o_rows=8, o_merged=1, qkv_rows=4, gate_rows=8)
            with torch.inference_mode():
                engine._rewind(to=position)
                again = engine._fused.step(5, position).clone()
            assert torch.allclose(reference.float(), again, atol=1e-4), \
                float((reference.float() - again).abs().max())
            # a forced run of three tokens, fused against transformers' padded pass
            ids = [5, 9, 11]
            with torch.inference_mode():
                engine._rewind(to=position)
                reference = engine._wide_step(torch.tensor([ids + [11] * 5]),
                                              engine._positions(position, 8),
                                              torch.tensor([2])).clone()
                fused = engine._run(ids, position).clone()
            assert torch.allclose(reference.float(), fused, atol=1e-4), \
                float((reference.float() - fused).abs().max())
            assert all(int(layer.cumulative_length) == position + 3
                       for layer in engine.cache.layers)
            # kernels that cannot run here: transformers' padded pass takes the run, and
            # every run after it
            def broken(*args):
                raise RuntimeError("no kernel image for this GPU")

            engine._forced.kernels.forward = broken
            with torch.inference_mode():
                engine._rewind(to=position)
                again = engine._run(ids, position).clone()
            assert engine._forced is None and torch.allclose(reference, again)
    assert results["fused"] == results["off"]
    assert all(len(set(r[0])) > 5 for r in results["off"])  # real, varied text
    print(f"{engine.fused_steps} fused steps agree")


def test_fused_batch_answers_as_each_frame_alone(tiny_torch_model):
    """Several frames decoded together through the batch's fused kernels
    (engines/fused_rows.py: every call of up to 128 tokens, a chosen token a row or the
    grammar's forced text after it) answer as each frame alone, rows joining mid-batch;
    the kernels ran those steps and wrote each row's keys and values where the plain
    torch step reads them (the logits of one more step agree)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}")
    proc = subprocess.run([sys.executable, __file__, str(tiny_torch_model), "batch"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("fused batch agrees")


def check_batch(model: str) -> None:
    import torch
    from test_batch import drive

    from pete_osc.director.schema import load_director
    from pete_osc.engines.base import Prompt
    from pete_osc.engines.torch_engine import TorchEngine

    director = load_director(ROOT / "DIRECTOR.md")
    prompt = Prompt.of(director)
    engine = TorchEngine(model, prompt.system, prompt.instruction,
                         GenerationSettings(24, 0.0, 64), static=True, kernels="fused",
                         weights="off")
    engine.constrain(director)
    images = frames(3)
    contexts = ["", "earlier: color: red", ""]
    prompts = [Prompt(prompt.system, prompt.instruction, c) for c in contexts]
    alone = [answer(engine, im, p).text for im, p in zip(images, prompts)]
    batch = engine.batch(4)
    rows = batch.rows
    rows.bucketed = True  # each step padded to a CUDA graph's bucket, as on CUDA
    assert rows.fused is not None
    got = drive(batch, {i: (im, p) for i, (im, p) in enumerate(zip(images, prompts))},
                {0: 0, 1: 0, 2: 2})
    texts = ["".join(t.text for t in got[i]) for i in range(3)]
    assert texts == alone, (texts, alone)
    assert all(len(set(t)) > 5 for t in texts)  # real, varied text
    # The fused kernels ran every step and the narrow prefills (a frame joining alone;
    # wider ones run as plain torch ops), forced runs of several tokens a row among them.
    assert batch.steps <= rows.fused.calls <= batch.steps + len(batch.prefills)
    assert rows.fused.tokens > sum(batch.rows_per_step)
    # One more step of two rows from where they stand, fused against plain torch ops.
    slots = [rows.open(8) for _ in range(2)]
    rows.prefill([(s, im, [], [1, 2, 3], []) for s, im in zip(slots, images)])
    x = engine.model.get_input_embeddings()(torch.tensor([[5, 9, 11], [7, 8, 2]]))
    meta = [torch.tensor(slots), torch.tensor([rows.length[s] for s in slots]),
            torch.tensor([2, 1])]
    with torch.inference_mode():
        plain = rows._layers(x, *meta).clone()
        fused = rows.fused.forward(x, *meta)
    assert torch.allclose(plain, fused, atol=1e-4), float((plain - fused).abs().max())
    print(f"{rows.fused.calls} calls, {rows.fused.tokens} tokens: fused batch agrees")


if __name__ == "__main__":
    from support.bounds import bounds_checked

    # Every load and store of every kernel inside its tensors (the interpreter does not
    # check; a GPU ends the process).
    with bounds_checked() as checked:
        if sys.argv[2] == "batch":
            check_batch(sys.argv[1])
        else:
            check(sys.argv[1], sys.argv[2] == "True")
    assert checked.accesses > 1000, checked.accesses
