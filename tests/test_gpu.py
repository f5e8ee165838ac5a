"""The GPU suite (`pytest -m gpu`): every student kind trains, labels and embeds on the machine's
device. It runs on any device and is meant for a CUDA one, where the trainer computes in bf16;
`scripts/gpu_check.sh` runs it there. On a CPU-only machine the same assertions hold in fp32."""

import pytest
import torch
from conftest import same
from test_students import KINDS, assert_only_adapter_moved, build, pretrained, snapshot

from distill.students import student_class
from distill.students.base import bf16_ok, default_dtype, device

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("student", KINDS)
def test_lora_moves_the_adapter_and_not_the_base_on_the_device(make_cfg, tmp_path, student, topic_rows):
    """A pretrained base loads in bf16 on a GPU and stays frozen; the adapters and an encoder's new
    head train in fp32 under autocast, and the trained model labels before export."""
    _, rows = topic_rows
    cfg, task, _ = pretrained(make_cfg, student, rows, tmp_path / "pretrained", "train.max_steps=20",
                              "train.batch_size=8")
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
    before, trained = snapshot(model)
    assert all(p.dtype == torch.float32 for n, p in model.model.named_parameters() if n in trained)
    assert all(p.dtype == default_dtype() for n, p in model.model.named_parameters()
               if n not in trained and p.is_floating_point())
    trainer = model.trainer(rows[:120], [], cfg.train, tmp_path / "ckpt")
    assert trainer.args.bf16 == bf16_ok()
    trainer.train()
    assert next(model.model.parameters()).device.type == device().type
    assert all(p.dtype == torch.float32 for n, p in model.model.named_parameters() if n in trained)
    assert_only_adapter_moved(model, before, trained)
    assert all(p["label"] in task.labels for p in model.predict(rows[:16], progress=False))


@pytest.mark.parametrize("student", KINDS)
def test_full_fine_tuning_keeps_fp32_master_weights_and_moves_them_at_a_small_learning_rate(
        make_cfg, tmp_path, student, topic_rows):
    """A pretrained base for full fine-tuning loads in fp32 and trains under bf16 autocast. At a
    learning rate of 1e-5 Adam's steps are about 1e-5: in fp32 nearly every element of a weight
    matrix moves; kept in bf16 (spacing about 1e-4 near a typical weight of 0.02) most would
    round back to where they were."""
    _, rows = topic_rows
    cfg, task, _ = pretrained(make_cfg, student, rows, tmp_path / "pretrained", "student.method=full",
                              "train.max_steps=5", "train.lr=1e-5", "train.warmup=0", "train.batch_size=8")
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
    assert all(p.dtype == torch.float32 for p in model.model.parameters())
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    model.trainer(rows[:80], [], cfg.train, tmp_path / "ckpt").train()
    after = dict(model.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in after.values())
    # weight matrices every row of which gets a gradient (embedding tables see only the rows used)
    matrices = [n for n, p in after.items() if p.dim() == 2 and "embed" not in n and "shared" not in n
                and "relative_attention_bias" not in n]
    moved = sorted(float((before[n].to(after[n].device) != after[n]).float().mean()) for n in matrices)
    assert matrices and moved[len(moved) // 2] > 0.9, f"median share of elements moved: {moved[len(moved) // 2]:.2f}"
    assert not same(before[matrices[0]], after[matrices[0]])


def test_qlora_keeps_the_4bit_base_frozen(make_cfg, tmp_path, topic_rows):
    pytest.importorskip("bitsandbytes")
    if not torch.cuda.is_available():
        pytest.skip("QLoRA needs a CUDA device")
    _, rows = topic_rows
    cfg, task, _ = pretrained(make_cfg, "tiny_causal", rows, tmp_path / "pretrained", "student.method=qlora",
                              "train.max_steps=10")
    model = student_class(cfg.student).create(cfg.student, task, seed=0)
    before, trained = snapshot(model)
    assert any(p.dtype == torch.uint8 for n, p in before.items() if n not in trained)  # packed 4-bit weights
    model.trainer(rows[:80], [], cfg.train, tmp_path / "ckpt").train()
    assert_only_adapter_moved(model, before, trained)


@pytest.mark.parametrize("student", KINDS)
def test_labels_and_embeddings_on_the_device_match_the_cpu(make_cfg, tmp_path, student, topic_rows):
    """The same saved student labels the same rows on the device (bf16 on a GPU) and on the CPU
    (fp32): the labels agree where the CPU is sure, confidences within bf16's error, and the
    monitor's embeddings point the same way."""
    _, rows = topic_rows
    cfg, task, model = build(make_cfg, student, rows, "train.max_steps=40", "train.batch_size=8",
                             "train.dev_fraction=0", "train.lr=3e-3")
    trainer = model.trainer(rows[:200], [], cfg.train, tmp_path / "ckpt")
    trainer.train()
    trainer.save_model(str(model.weights_dir(tmp_path / "student")))
    model.export(tmp_path / "student")
    cls = student_class(cfg.student)
    here = cls.load(cfg.student, task, tmp_path / "student", on=device())
    cpu = cls.load(cfg.student, task, tmp_path / "student", on=torch.device("cpu"))
    cpu.model.float()
    sample = rows[200:328]
    on_device = here.predict(sample, batch_size=32, progress=False, batch_tokens=2048)
    on_cpu = cpu.predict(sample, batch_size=7, progress=False)
    # bf16 may flip a near tie: compare labels on the half of the rows the CPU is surest of
    sure = sorted(range(len(sample)), key=lambda i: on_cpu[i]["confidence"])[len(sample) // 2:]
    agree = sum(on_device[i]["label"] == on_cpu[i]["label"] for i in sure)
    assert agree >= 0.95 * len(sure), f"{agree} of {len(sure)} sure labels agree"
    gap = [abs(on_device[i]["confidence"] - on_cpu[i]["confidence"]) for i in range(len(sample))]
    assert sorted(gap)[len(gap) // 2] < 0.03 and max(gap) < 0.2  # a label's few tokens, each rounded in bf16
    texts = [r["text"] for r in sample[:32]]
    a = torch.from_numpy(here.embed(texts)).float()
    b = torch.from_numpy(cpu.embed(texts)).float()
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.98
