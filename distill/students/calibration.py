"""Temperature scaling (Guo et al. 2017), fitted on the dev split of teacher labels.

A student's confidence is the probability of its top answer: the top class, or the geometric mean
of its output tokens' probabilities. Dividing the logits by a temperature T leaves every answer the
same and moves only the confidences; T is chosen to minimise the log loss of those confidences
against a target on the dev split. `agreement`: whether the student agrees with the teacher, which
makes confidence estimate agreement with a noisy teacher. `teacher_confidence` (used where the
teacher's confidence is known): the chance the student is right, c when it agrees with a teacher
of confidence c and 1 - c when it does not, so confidence estimates accuracy.
"""

from __future__ import annotations

import math

import torch

from distill.stats import ece  # the monitor's ECE too: one binning everywhere

# log-spaced from 0.05 to 20; the middle value is exactly 1
GRID = torch.exp(torch.linspace(math.log(0.05), math.log(20.0), 121))


def top_confidence(logits: torch.Tensor, temps: torch.Tensor) -> torch.Tensor:
    """Log-probability of the top class at each temperature: [..., C] -> [..., G]."""
    logits = logits.float()
    return torch.stack([(logits / t).log_softmax(-1).max(-1).values for t in temps.tolist()], -1)


def mean_over(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Geometric-mean probability over the masked positions: [B, L, G], [B, L] -> [B, G]."""
    m = mask.unsqueeze(-1).to(logp.dtype)
    return ((logp * m).sum(1) / m.sum(1).clamp(min=1)).exp()


def log_loss(confidence: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Mean log loss of confidences [n, G] against 0/1 or soft targets [n]."""
    p = confidence.clamp(1e-6, 1 - 1e-6)
    c = correct.float().unsqueeze(-1)
    return -(c * p.log() + (1 - c) * (1 - p).log()).mean(0)


def platt_targets(goal: torch.Tensor) -> torch.Tensor:
    """Platt's (1999) smoothed targets: (N+ + 1) / (N+ + 2) for a 1 and 1 / (N- + 2) for a 0 (soft
    targets mixed alike). A dev split the student agrees with on every row then still gives a
    finite temperature, instead of the sharpest the grid allows."""
    pos = goal.float().sum()
    neg = len(goal) - pos
    return goal.float() * (pos + 1) / (pos + 2) + (1 - goal.float()) / (neg + 2)


def fit_temperature(student, dev_rows: list[dict], batch_size: int = 32, target: str = "agreement") -> dict:
    """Fit T on the dev rows (teacher labels) against `target`; report dev agreement and ECE
    (against agreement) before and after."""
    if not dev_rows:
        return {"temperature": 1.0, "dev_rows": 0, "note": "no dev split: confidences left uncalibrated"}
    preds = student.predict(dev_rows, batch_size, progress=False, temps=GRID)
    grid = torch.tensor([p["confidence"] for p in preds])  # [n, G]
    agree = torch.tensor([p["label"] == r["label"] for p, r in zip(preds, dev_rows)])
    teacher = [r.get("confidence") for r in dev_rows]
    goals = {"agreement": agree.float()}
    if all(c is not None for c in teacher):
        c = torch.tensor(teacher, dtype=torch.float32)
        goals["teacher_confidence"] = torch.where(agree, c, 1 - c)  # the chance the student's answer is right
    target = target if target in goals else "agreement"
    fitted = {name: int(log_loss(grid, platt_targets(g)).argmin()) for name, g in goals.items()}
    best, goal = fitted[target], goals[target]
    one = int((GRID - 1).abs().argmin())
    return {
        "temperature": round(float(GRID[best]), 4),
        "target": target,
        "temperature_by_target": {name: round(float(GRID[k]), 4) for name, k in fitted.items()},
        "dev_rows": len(dev_rows),
        "dev_agreement": float(agree.float().mean()),
        "dev_accuracy_estimate": float(goal.mean()),
        "ece_before": float(ece(grid[:, one].numpy(), agree.numpy())),
        "ece_after": float(ece(grid[:, best].numpy(), agree.numpy())),
        "mean_confidence_before": float(grid[:, one].mean()),
        "mean_confidence_after": float(grid[:, best].mean()),
    }
