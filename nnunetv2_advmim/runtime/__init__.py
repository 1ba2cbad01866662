"""Run-time plumbing the trainers share: checkpoints and resume, weight loading, mixed precision and the guarded
optimizer step, non-finite guards and determinism, finished-run safety, memory probes."""
