#!/usr/bin/env python3
"""cu2cpp.py SRC OUT [--keep-names] — a copy of a CUDA source for the CPU emulator.

Three textual changes, nothing else (line numbers are kept, so the emulator's
messages and compiler errors point at the same lines as the original):
  - every launch `kernel<<<grid, block[, smem[, stream]]>>>(args)` becomes
    `vae_emu_launch(grid, block, smem, stream, kernel, args)` (cuda_emu.h),
    or vae_emu_launch_free(...) when the kernel cannot reach a barrier: no
    __syncthreads or warp shuffle in its body or in any function it calls,
    found by reading every .cu/.cuh file beside SRC. The emulator runs such
    a kernel's threads as plain calls, and stops with a message should one
    reach a barrier after all;
  - every launch `vae_launch(kernel, grid, block, smem, stream)(args)` (the
    form src/kernels uses, common.cuh) becomes
    `vae_emu_launch_pdl(grid, block, smem, stream, kernel, args)` (or
    vae_emu_launch_pdl_free), which also checks that each thread of the
    launch passed the kernel's VAE_PDL_ENTRY();
  - the launchers' prefix vae_cuda_ becomes vae_emu_, so that a test can
    link the emulated kernels next to a CUDA build's real ones (not with
    --keep-names: the mock device, tests/mock, links them under their own
    names, for src/host/backend_cuda.c to call).
"""
import glob
import os
import re
import sys

BARRIERS = {'__syncthreads', '__syncwarp', '__shfl_sync', '__shfl_xor_sync', '__shfl_up_sync',
            '__shfl_down_sync'}
KEYWORDS = {'if', 'for', 'while', 'switch', 'return', 'sizeof', 'catch', 'defined'}


def strip_comments(s):
    s = re.sub(r'/\*.*?\*/', ' ', s, flags=re.S)
    return re.sub(r'//[^\n]*', ' ', s)


def match_close(s, start, open_ch, close_ch, error):
    """s[start] == open_ch: index of the close_ch that matches it."""
    depth = 0
    for i in range(start, len(s)):
        if s[i] == open_ch:
            depth += 1
        elif s[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(error)


def match_brace(s, start):
    return match_close(s, start, '{', '}', "unbalanced braces")


def functions(text):
    """(name, body) of every function definition in comment-free text."""
    out = []
    for m in re.finditer(r'\b([A-Za-z_]\w*)\s*\(((?:[^()]|\([^()]*\))*)\)\s*(?:const\s*)?\{',
                         text):
        if m.group(1) in KEYWORDS:
            continue
        b = m.end() - 1
        out.append((m.group(1), text[b:match_brace(text, b) + 1]))
    return out


def barrier_functions(paths):
    """Names of the functions that can reach a barrier, transitively."""
    funcs = []
    for p in paths:
        with open(p) as f:
            funcs += functions(strip_comments(f.read()))
    reach = set(BARRIERS)
    grew = True
    while grew:
        grew = False
        for name, body in funcs:
            if name not in reach and set(re.findall(r'\w+', body)) & reach:
                reach.add(name)
                grew = True
    return reach


def match_back_angle(s, end):
    """s[end] == '>': index of the '<' that opens it."""
    depth = 0
    for i in range(end, -1, -1):
        if s[i] == '>':
            depth += 1
        elif s[i] == '<':
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced template arguments before <<<")


def match_paren(s, start):
    """s[start] == '(': index of the matching ')'."""
    return match_close(s, start, '(', ')', "unbalanced parentheses after >>>")


def split_top(s):
    """Split on commas outside parentheses/brackets/braces."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        if ch == ',' and depth == 0:
            out.append(''.join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append(''.join(cur))
    return out


def emu_call(launch, cfg, sep, callee, args, reach):
    """launch(cfg..., callee, args): `launch` for a kernel that can reach a
    barrier, launch + '_free' for one that cannot (barrier_functions)."""
    name = re.sub(r'<.*', '', callee, flags=re.S).strip()
    call = (launch if name in reach else launch + '_free') + '(' + ','.join(cfg) + sep + callee
    if args.strip():
        call += ', ' + args
    return call + ')'


def rewrite(src, reach):
    out = []
    pos = 0
    while True:
        k = src.find('<<<', pos)
        if k < 0:
            out.append(src[pos:])
            return ''.join(out)
        # the callee: an identifier, optionally with template arguments
        j = k
        while j > 0 and src[j - 1].isspace():
            j -= 1
        if src[j - 1] == '>':
            j = match_back_angle(src, j - 1)
            while j > 0 and src[j - 1].isspace():
                j -= 1
        m = re.search(r'[A-Za-z_][A-Za-z0-9_:]*$', src[:j])
        if not m:
            raise ValueError("no kernel name before <<< at offset %d" % k)
        start = m.start()
        callee = src[start:k].rstrip()
        e = src.find('>>>', k)
        cfg = split_top(src[k + 3:e])
        if not 2 <= len(cfg) <= 4:
            raise ValueError("launch configuration %r" % src[k + 3:e])
        cfg += ['0'] * (4 - len(cfg))
        p = e + 3
        while src[p].isspace():
            p += 1
        if src[p] != '(':
            raise ValueError("no argument list after >>>")
        q = match_paren(src, p)
        out.append(src[pos:start])
        out.append(emu_call('vae_emu_launch', cfg, ', ', callee, src[p + 1:q], reach))
        pos = q + 1


def blank_comments(s):
    """s with each comment's characters but newlines turned to spaces: the
    same length, so an offset in it is the same place in s."""
    def blank(m):
        return re.sub(r'[^\n]', ' ', m.group(0))
    return re.sub(r'/\*.*?\*/|//[^\n]*', blank, s, flags=re.S)


def rewrite_vae_launch(src, reach):
    """vae_launch(K, g, b, smem, s)(args) -> vae_emu_launch_pdl[_free](g, b, smem, s, K, args).
    Matched outside comments: a mention in a comment, or one not followed by
    an argument list (the template's own definition in common.cuh), is left
    alone."""
    out = []
    pos = 0
    code = blank_comments(src)
    for m in re.finditer(r'(?<![\w.>])vae_launch\s*\(', code):
        if m.start() < pos:
            continue
        p = m.end() - 1
        q = match_close(code, p, '(', ')', "unbalanced parentheses in vae_launch(...)")
        r = q + 1
        while r < len(code) and code[r].isspace():
            r += 1
        if r >= len(code) or code[r] != '(':
            continue
        parts = split_top(src[p + 1:q])
        if len(parts) < 5:
            raise ValueError("vae_launch needs kernel, grid, block, smem, stream: %r"
                             % src[p + 1:q])
        callee = ','.join(parts[:-4])
        cfg = parts[-4:]
        e = match_close(code, r, '(', ')', "unbalanced parentheses in a vae_launch's arguments")
        out.append(src[pos:m.start()])
        # the space between ")(" (a line break, maybe) after the config's comma
        out.append(emu_call('vae_emu_launch_pdl', cfg, ',' + src[q + 1:r], callee,
                            src[r + 1:e], reach))
        pos = e + 1
    out.append(src[pos:])
    return ''.join(out)


def main():
    src_path, out_path = sys.argv[1], sys.argv[2]
    with open(src_path) as f:
        src = f.read()
    here = os.path.dirname(os.path.abspath(src_path))
    reach = barrier_functions(sorted(glob.glob(os.path.join(here, '*.cu')) +
                                     glob.glob(os.path.join(here, '*.cuh'))))
    try:
        text = rewrite_vae_launch(rewrite(src, reach), reach)
    except ValueError as exc:
        sys.exit("%s: %s" % (src_path, exc))
    if '--keep-names' not in sys.argv[3:]:
        text = re.sub(r'\bvae_cuda_', 'vae_emu_', text)
    with open(out_path, 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()
