"""Training stages: masked-LM pretraining (`raft pretrain`) and fine-tuning.

Shared pieces: `progress` (progress bar / one log line per interval + JSONL), `checkpoint`
(atomic checkpoints, resume, pruning, preemption signals), `mlm` (masking, sparse MLM loss).
"""
