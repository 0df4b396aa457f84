# Runtime hook of the `cpu` build (runs before the app's code). That build ships only
# the CUDA libraries torch needs to load, not the ones GPU work opens later (cuDNN's
# kernels, cuSOLVER): so no GPU may be seen, or the first convolution on one would fail.
import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""
