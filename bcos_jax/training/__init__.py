"""Training pieces used by the top-level ``train.py`` (one job per module).

* ``defaults``   — the config schema: every key train.py reads, with its default (the only one).
* ``state``      — ``TrainState``: the arrays a step changes (params, statistics, optimiser, EMA).
* ``step``       — ``Setup`` (model, optimiser, constants) and the pure ``init`` / ``train_step``
  / ``eval_step``; ``jit_on_mesh`` compiles them with train.py's shardings.
* ``losses``     — BCE / uniform-off-labels BCE / softmax CE on dense targets, aux loss.
* ``optim``      — learning-rate schedules of the reference recipes, unit-wise AGC, optimisers.
* ``ema``        — the torchvision-recipe exponential moving average of the weights.
* ``sharding``   — mesh from the config, parameter sharding rules, global batch assembly.
* ``checkpoint`` — orbax checkpoints of the train state + data iterator (a trained model is
  saved and loaded by ``bcos_jax.hub``).
* ``metrics``    — top-k counts, TensorBoard writer, progress bar, summary.json.
* ``evaluate``   — sharded evaluation, explanation images, the localisation score.
* ``aot``        — ahead-of-time compilation of the train step for TPU topologies.

Nothing here imports ``train.py``; ``train.py`` is the one place where the pieces meet.
"""
