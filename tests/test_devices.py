"""Device detection on fake sysfs / proc / cgroup trees, and on this machine."""

import os

import pytest

from hetsam.errors import HetsamInputError
from hetsam.hardware.detect import (
    COULD_NOT_COLLECT,
    cgroup_cpu_limit,
    cpus_of,
    detect,
    detect_cpus,
    detect_gpus,
)


def make_tree(tmp_path, packages, *, online=None, cpuinfo=True, cgroup_lines=None, meminfo_kb=16 * 2**20):
    """packages: OS CPU id -> physical_package_id (None: no topology file)."""
    sysfs, proc, cg = tmp_path / "sys", tmp_path / "proc", tmp_path / "cgroup"
    cpu_dir = sysfs / "devices" / "system" / "cpu"
    cpu_dir.mkdir(parents=True)
    cg.mkdir()
    (proc / "self").mkdir(parents=True)
    ids = sorted(packages)
    (cpu_dir / "online").write_text(online if online is not None else f"{ids[0]}-{ids[-1]}\n")
    for cpu, pkg in packages.items():
        topo = cpu_dir / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        if pkg is not None:
            (topo / "physical_package_id").write_text(f"{pkg}\n")
            (topo / "core_id").write_text(f"{cpu}\n")
    if cpuinfo:
        text = "".join(f"processor\t: {c}\nmodel name\t: Fake CPU {packages[c]}\n\n" for c in ids)
        (proc / "cpuinfo").write_text(text)
    if meminfo_kb is not None:
        (proc / "meminfo").write_text(f"MemTotal:       {meminfo_kb} kB\nMemFree: 1 kB\n")
    (proc / "self" / "cgroup").write_text("\n".join(cgroup_lines or ["0::/"]) + "\n")
    return {"sysfs_root": sysfs, "proc_root": proc, "cgroup_root": cg}


def test_two_sockets_grouped_by_package(tmp_path):
    roots = make_tree(tmp_path, {0: 0, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1})
    cpus = detect_cpus(**roots, affinity={0, 1, 2, 3, 4, 5})
    assert [d.id for d in cpus] == ["cpu:0", "cpu:1"]
    assert cpus[0].cpus == (0, 1, 4) and cpus[1].cpus == (2, 3, 5)
    assert [d.cores for d in cpus] == [3, 3]
    assert cpus[0].name == "Fake CPU 0" and cpus[1].name == "Fake CPU 1"
    assert cpus[0].memory_bytes == 16 * 2**30


def test_affinity_subset_and_pool_positions(tmp_path):
    roots = make_tree(tmp_path, {0: 0, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1})
    cpus = detect_cpus(**roots, affinity={1, 4, 5})
    assert [(d.id, d.cpus, d.cores) for d in cpus] == [("cpu:0", (1, 4), 2), ("cpu:1", (5,), 1)]
    # positions index the socket's usable CPUs, not OS ids
    assert cpus_of("cpu:0[1]", cpus) == (4,)
    assert cpus_of("cpu:0[0-1]", cpus) == (1, 4)
    assert cpus_of("cpu:1", cpus) == (5,)
    assert cpus_of("cpu", cpus) == (1, 4, 5)
    with pytest.raises(HetsamInputError, match="position"):
        cpus_of("cpu:1[1]", cpus)
    with pytest.raises(HetsamInputError, match="socket cpu:2"):
        cpus_of("cpu:2", cpus)
    with pytest.raises(HetsamInputError, match="GPU"):
        cpus_of("cuda:0", cpus)


def test_offline_cpus_are_not_usable(tmp_path):
    roots = make_tree(tmp_path, {0: 0, 1: 0, 2: 0, 3: 0}, online="0,2-3")
    (cpu,) = detect_cpus(**roots, affinity={0, 1, 2, 3})
    assert cpu.cpus == (0, 2, 3)


def test_cgroup_v2_quota_caps_cores(tmp_path):
    roots = make_tree(tmp_path, {c: 0 for c in range(8)}, cgroup_lines=["0::/job/task"])
    job = roots["cgroup_root"] / "job"
    (job / "task").mkdir(parents=True)
    (job / "cpu.max").write_text("250000 100000\n")  # 2.5 cores on the parent
    (job / "task" / "cpu.max").write_text("max 100000\n")  # unlimited on the leaf
    assert cgroup_cpu_limit(roots["cgroup_root"], roots["proc_root"]) == pytest.approx(2.5)
    (cpu,) = detect_cpus(**roots, affinity=set(range(8)))
    assert cpu.cores == 2  # floor(2.5)
    assert cpu.cpus == tuple(range(8))  # every allowed CPU stays addressable
    assert cpu.details["cgroup_cpu_limit"] == 2.5


def test_cgroup_v1_quota_and_tiny_quota(tmp_path):
    roots = make_tree(tmp_path, {c: 0 for c in range(4)}, cgroup_lines=["3:cpu,cpuacct:/docker/abc", "0::/"])
    d = roots["cgroup_root"] / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("50000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(roots["cgroup_root"], roots["proc_root"]) == pytest.approx(0.5)
    (cpu,) = detect_cpus(**roots, affinity=set(range(4)))
    assert cpu.cores == 1  # never below one core


def test_unlimited_quota_keeps_all_cores(tmp_path):
    roots = make_tree(tmp_path, {c: 0 for c in range(4)}, cgroup_lines=["1:cpu:/"])
    (roots["cgroup_root"] / "cpu").mkdir()
    (roots["cgroup_root"] / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (roots["cgroup_root"] / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (roots["cgroup_root"] / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(roots["cgroup_root"], roots["proc_root"]) is None
    (cpu,) = detect_cpus(**roots, affinity=set(range(4)))
    assert cpu.cores == 4


def test_missing_files_could_not_collect(tmp_path):
    roots = make_tree(tmp_path, {0: None, 1: None}, cpuinfo=False, meminfo_kb=None)
    (roots["proc_root"] / "self" / "cgroup").unlink()
    notes = []
    (cpu,) = detect_cpus(**roots, affinity={0, 1}, notes=notes)
    assert cpu.id == "cpu:0" and cpu.cpus == (0, 1)
    assert cpu.name == COULD_NOT_COLLECT and cpu.memory_bytes == COULD_NOT_COLLECT
    assert any("physical_package_id" in n for n in notes)


def test_empty_sysfs_falls_back_to_affinity(tmp_path):
    notes = []
    cpus = detect_cpus(tmp_path / "nosys", tmp_path / "noproc", tmp_path / "nocg", affinity={3, 5}, notes=notes)
    assert [(d.id, d.cpus, d.cores) for d in cpus] == [("cpu:0", (3, 5), 2)]
    assert notes


class _FakeNVML:
    """A stand-in for the pynvml module (no NVIDIA driver on CI)."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    class _Mem:
        total = 48 * 2**30

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlSystemGetDriverVersion(self):
        return b"550.1"

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA RTX A6000"

    def nvmlDeviceGetUUID(self, h):
        return "GPU-1234"

    def nvmlDeviceGetMemoryInfo(self, h):
        return self._Mem()

    def nvmlDeviceGetMaxClockInfo(self, h, which):
        raise RuntimeError("not supported")  # a failing field must not fail the probe

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return 4

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return 16


def test_nvml_only_gpu_record_and_failed_fields():
    notes = []
    (gpu,) = detect_gpus(notes, probe_torch=False, nvml=_FakeNVML())
    assert gpu.id == "cuda:0" and gpu.kind == "gpu" and gpu.name == "NVIDIA RTX A6000"
    assert gpu.memory_bytes == 48 * 2**30
    assert gpu.details["sm_clock_max_mhz"] == COULD_NOT_COLLECT
    assert gpu.details["pcie_width"] == 16


def test_broken_nvml_is_a_note_not_a_crash():
    class Broken(_FakeNVML):
        def nvmlInit(self):
            raise OSError("NVML Shared Library Not Found")

    notes = []
    assert detect_gpus(notes, probe_torch=False, nvml=Broken()) == []
    assert any("could not collect" in n for n in notes)


def test_this_machine():
    cpus = detect().devices
    mine = [d for d in cpus if d.kind == "cpu"]
    assert mine and sum(len(d.cpus) for d in mine) == len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit()
    expected = len(os.sched_getaffinity(0)) if limit is None else min(len(os.sched_getaffinity(0)), max(1, int(limit)))
    assert mine[0].cores == min(expected, len(mine[0].cpus))
    assert cpus_of("cpu:0[0]") == (mine[0].cpus[0],)
