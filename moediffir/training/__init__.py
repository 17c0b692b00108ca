"""Stage I and stage II fine-tuning of MoE-DiffIR (paper §3.4, §4.1; docs/design.md §5).

Import what you need from the submodules (no import-time work here)::

    from moediffir.training.stage1 import train_stage1
    from moediffir.training.stage2 import generate_stage2_data, train_stage2
    from moediffir.training.pairs import PairedCropDataset, ResumableBatchSampler
    from moediffir.training.checkpoint import save_checkpoint, load_checkpoint, latest_checkpoint
    from moediffir.training.training_log import TrainingLog, RoutingStats, read_jsonl
"""
