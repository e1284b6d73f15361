"""Tests of ptx_counts.py on PTX written by hand, its instructions counted by eye."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from ptx_counts import kernel_counts, main, rows  # noqa: E402

PTX = """
.version 8.8
.target sm_90a
.address_size 64

.visible .entry first(
    .param .u64 first_param_0
)
{
    .reg .b32 %r<4>;
    .shared .align 4 .b8 tile[64];
    ld.param.u64 %rd1, [first_param_0];  // a comment; not a second instruction
$L__BB0_1:
    mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f1,%f2,%f3,%f4}, {%r1,%r2,%r3,%r4}, {%r5,%r6}, {%f1,%f2,%f3,%f4};
    @%p1 bra $L__BB0_1;
    ret;
}

.visible .entry second()
{
    wgmma.fence.sync.aligned;
    wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 {%f1}, {%r1}, %rd1, p, 1, 1;
    wgmma.commit_group.sync.aligned;
    ret;
}
"""


def test_each_kernel_counts_its_instructions_and_its_tensor_core_products_alone():
    # first: ld.param, mma.sync, the predicated branch, ret (the declarations and the label are not
    # instructions); second: the fence, the product, the commit, ret (a fence is not a product).
    assert kernel_counts(PTX) == {"first": (4, 1), "second": (4, 1)}


def test_rows_take_the_kernels_of_both_sets_that_match():
    before = {"mlffUpdateHiddenForward": (10, 3), "mlffReadout": (5, 0), "gone": (1, 0)}
    after = {"mlffUpdateHiddenForward": (6, 1), "mlffReadout": (5, 0)}
    assert rows(before, after, "Update") == [("mlffUpdateHiddenForward", (10, 3), (6, 1))]
    assert [r[0] for r in rows(before, after, "")] == ["mlffReadout", "mlffUpdateHiddenForward"]


def test_main_prints_a_line_a_kernel_with_the_change(tmp_path, capsys):
    for folder, text in (("before", PTX), ("after", PTX.replace("    ld.param.u64 %rd1, [first_param_0];", ""))):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.nvrtc.ptx").write_text(text)
    main([str(tmp_path / "before"), str(tmp_path / "after"), "--kernels", "first"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "m.nvrtc.ptx: instructions (tensor-core products)"
    assert len(out) == 2 and out[1].split()[0] == "first" and out[1].endswith("-25 %")


def test_main_reads_only_ptx_whatever_the_modules_expression_matches(tmp_path, capsys):
    for folder in ("before", "after"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.nvrtc.ptx").write_text(PTX)
        (tmp_path / folder / "m.cubin").write_bytes(b"\x7fELF\xbe\xff")  # not text: read, it would raise
    main([str(tmp_path / "before"), str(tmp_path / "after"), "--modules", "^m"])
    assert capsys.readouterr().out.splitlines()[0] == "m.nvrtc.ptx: instructions (tensor-core products)"
