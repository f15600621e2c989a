#!/usr/bin/env python3
"""lint_kernels.py KERNEL_DIR — the rules that make programmatic dependent
launch safe ($VAE_CUDA_PDL=1, src/kernels/common.cuh), checked on the source:

  1. every __global__ function's body begins with VAE_PDL_ENTRY(); — the wait
     for the grids it depends on comes before any of its reads or writes;
  2. no triple-chevron launch and no cudaLaunchKernel* call outside
     common.cuh: every launch goes through vae_launch(), the one place that
     sets the launch attribute (and whose launches the CPU emulator checks
     at run time, tests/emu/cu2cpp.py).

Both the .cu and the .cuh files of the folder are read.

A kernel without the entry, launched with the attribute, could read a
buffer its predecessor is still writing: a race a GPU shows only
sometimes. Exit 0 when both hold, 1 with the places otherwise."""
import glob
import os
import re
import sys


# comments blanked out, newlines kept (offsets give line numbers): the
# emulator's translator's own
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'emu'))
from cu2cpp import blank_comments  # noqa: E402


def check(path):
    with open(path) as f:
        text = blank_comments(f.read())
    errors = []
    line = lambda off: text.count('\n', 0, off) + 1
    for m in re.finditer(r'<<<', text):
        errors.append('%s:%d: a triple-chevron launch; launch with vae_launch(kernel, grid, '
                      'block, smem, stream)(args)' % (path, line(m.start())))
    if os.path.basename(path) != 'common.cuh':
        for m in re.finditer(r'\bcudaLaunch(Kernel\w*|Cooperative\w*)\b', text):
            errors.append('%s:%d: %s; launch with vae_launch(kernel, grid, block, smem, '
                          'stream)(args)' % (path, line(m.start()), m.group(0)))
    kernels = 0
    for m in re.finditer(r'\b__global__\b', text):
        kernels += 1
        b = text.find('{', m.end())
        head = text[m.end():b]
        if b < 0 or ';' in head:
            errors.append('%s:%d: a __global__ declaration without a body here; define '
                          'kernels where they are declared' % (path, line(m.start())))
            continue
        # the name: the identifier before the parameter list, the last
        # parenthesised group of the head (after __launch_bounds__(...))
        close = head.rstrip().rfind(')')
        depth, open_ = 0, -1
        for i in range(close, -1, -1):
            depth += {')': 1, '(': -1}.get(head[i], 0)
            if depth == 0:
                open_ = i
                break
        name = re.findall(r'(\w+)\s*$', head[:open_]) if open_ > 0 else []
        name = name[0] if name else '?'
        if not re.match(r'\s*VAE_PDL_ENTRY\s*\(\s*\)\s*;', text[b + 1:]):
            errors.append('%s:%d: kernel %s does not begin with VAE_PDL_ENTRY();'
                          % (path, line(b), name))
    return kernels, errors


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    files = sorted(glob.glob(os.path.join(sys.argv[1], '*.cu')) +
                   glob.glob(os.path.join(sys.argv[1], '*.cuh')))
    if not files:
        print('lint_kernels: no .cu or .cuh files in %s' % sys.argv[1])
        return 1
    total, errors = 0, []
    for p in files:
        k, e = check(p)
        total += k
        errors += e
    for e in errors:
        print(e)
    print('lint_kernels: %d kernels in %d files, %d problems' % (total, len(files), len(errors)))
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
