"""torch models: the out-of-fold classifier, the VAE, the conditional GAN and the judge.

Importing this package (``assay.pipeline`` and ``assay.flows`` import it first) sets
``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it: OpenMP reads the
variable once, when torch loads, and its default makes idle threads spin for a core,
which collapses training speed when another process is using the CPUs. See the README,
"Busy machines".
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
