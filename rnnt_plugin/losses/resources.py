"""ptxas figures of the CUDA loss kernels: registers per thread and shared memory, per architecture and dtype.

    python -m rnnt_plugin.losses.resources          # rewrite kernel_resources.json (needs libnvvm and ptxas)
    python -m rnnt_plugin.losses.resources --print  # print them instead

Each kernel of cuda.py is compiled to PTX by Numba (libnvvm) for sm_80 and sm_90, for float32, float64,
float16 and bfloat16 logits, and assembled by ptxas -v, which reports what the driver will allocate. The
recorded file is what launch.py checks settings against where there is no driver to ask (the simulator, the
tests); on a GPU the driver's own figures are used. Needs no GPU; not importable under the CUDA simulator.
"""

import argparse
import glob
import json
import re
import shutil
import subprocess
import tempfile

import numba

from rnnt_plugin.losses import cuda as kernels
from rnnt_plugin.losses.launch import KINDS, RESOURCES_FILE

ARCHS = ((8, 0), (9, 0))  # A100, H100: the MLPerf machines
DTYPES = ("float32", "float64", "float16", "bfloat16")


def ptxas_path():
    """ptxas on PATH or in a CUDA toolkit under /usr/local; None if there is none."""
    found = shutil.which("ptxas") or sorted(glob.glob("/usr/local/cuda*/bin/ptxas"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def ptx(kind: str, name: str, capability: tuple) -> str:
    """PTX of kernel `kind` for logits dtype `name` and compute capability (major, minor)."""
    from numba.cuda import compile_ptx

    text, _ = compile_ptx(kernels.kernel(kind, name).py_func, kernels.signature(kind, name), cc=capability)
    return text


def assemble(ptx_text: str, capability: tuple, ptxas: str) -> dict:
    """{"registers", "shared" (static bytes), "spill_bytes"} from `ptxas -v` for sm_<major><minor>."""
    arch = f"sm_{capability[0]}{capability[1]}"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as source:
        source.write(ptx_text)
        source.flush()
        proc = subprocess.run([ptxas, f"-arch={arch}", "-v", source.name, "-o", "/dev/null"], capture_output=True,
                              text=True, check=True)
    report = proc.stderr + proc.stdout
    registers = re.search(r"Used (\d+) registers", report)
    assert registers, report
    shared = re.search(r"(\d+) bytes smem", report)
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", report)]
    return {"registers": int(registers.group(1)), "shared": int(shared.group(1)) if shared else 0,
            "spill_bytes": max(spills, default=0)}


def measure(archs=ARCHS, dtypes=DTYPES, ptxas=None) -> dict:
    """{"sm_XY": {"<kind>/<dtype>": {"registers", "shared", "spill_bytes"}}} for every kernel."""
    ptxas = ptxas or ptxas_path()
    if ptxas is None:
        raise FileNotFoundError("ptxas not found (install a CUDA toolkit or put its bin/ on PATH)")
    return {f"sm_{major}{minor}": {f"{kind}/{name}": assemble(ptx(kind, name, (major, minor)), (major, minor), ptxas)
                                   for kind in KINDS for name in dtypes}
            for major, minor in archs}


def ptxas_version(ptxas: str) -> str:
    out = subprocess.run([ptxas, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print the figures instead of writing the file")
    args = parser.parse_args(argv)
    ptxas = ptxas_path()
    record = {"comment": "ptxas -v figures of rnnt_plugin.losses.cuda's kernels (registers per thread, static shared "
                         "bytes per block); regenerate with `python -m rnnt_plugin.losses.resources`",
              "numba": numba.__version__, "ptxas": ptxas_version(ptxas), "figures": measure(ptxas=ptxas)}
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    if args.print:
        print(text)
    else:
        RESOURCES_FILE.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
