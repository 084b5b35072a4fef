"""Models and training utilities that read gpumat's jagged batches: ``hstu`` (the HSTU model) and
``train`` (training steps, throughput, ranking metrics, the popularity baseline)."""
