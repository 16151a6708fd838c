# Sourced by the GPU scripts (gpu_bench.sh, gpu_pretrain.sh) from the
# project's root, with PYTHON set: the wheels the lent machine lacks
# (../shared/gpu/prepare.sh puts them in .gpu/whl), installed into /tmp/site
# and put on PYTHONPATH ahead of the project. Nothing happens without them.
if compgen -G '.gpu/whl/*.whl' >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
    --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
