"""1-D convolutions in several equivalent forms, picked per layer by a policy.

``conv1d`` / ``conv_transpose1d`` equal lax's conv / 'SAME' transposed conv
on NWC inputs and ``[K, Cin, Cout]`` kernels, values and gradients; which
form computes each call is `ConvPolicy`'s choice (policy.py), by layer
shape and backend. One file per form: xla.py, im2col.py, taps.py (planned
by taps_plan.py), phases.py (strided convs), polyphase.py (transposed
convs), and under the last two stride1.py with karatsuba.py and
channels_first.py. prepared.py makes the kernels' re-layouts once for
inference.
"""

from segan_jax.ops.conv.dispatch import (CONV1D_FORMS, CONV_TRANSPOSE1D_FORMS,
                                         conv1d, conv1d_form,
                                         conv_transpose1d)
from segan_jax.ops.conv.policy import (ConvPolicy, current_policy,
                                       load_forms_table, policy_with_table,
                                       use_policy)
from segan_jax.ops.conv.polyphase import polyphase_kernel, polyphase_taps
