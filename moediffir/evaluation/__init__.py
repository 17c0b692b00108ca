"""Evaluation of paper §4.2 and appendix B: restore the test sets, score them, save every number (docs/design.md §7).

* :mod:`moediffir.evaluation.protocol` -- items, methods, seeds, output layout;
* :mod:`moediffir.evaluation.benchmark_restore` -- batched, resumable restoration with the pipeline;
* :mod:`moediffir.evaluation.external` -- other methods' folders matched to the benchmark;
* :mod:`moediffir.evaluation.scoring` -- per-image metrics, FID per set, the tidy results table;
* :mod:`moediffir.evaluation.analysis` -- prompt similarity (Fig. 8) and expert usage per task;
* :mod:`moediffir.evaluation.evaluator` -- :func:`run_evaluation` and :func:`evaluate_model`;
* :mod:`moediffir.evaluation.results` -- the files under ``metrics/`` and :func:`write_evaluation`;
* :mod:`moediffir.evaluation.sharded_evaluation` -- the evaluation in shards and their merge;

The notebook studies around it (yardsticks, the sampler study, the prior's quality, the denoiser probe, photos
from elsewhere) are :mod:`moediffir.studies`; the spread of the ablation means is
:mod:`moediffir.ablation.spread`. Import the functions from their modules; importing this package loads nothing
heavy.
"""
