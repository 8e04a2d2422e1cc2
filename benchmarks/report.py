"""Rich tables of a result document (one per section)."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _f(value, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def machine_table(doc: dict) -> Table:
    m = doc["machine"]
    table = Table(title="machine", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [("date", doc["date"]), ("cpu", m["cpu_model"]),
            ("cpus", f"{m['logical_cpus']} logical, {m['cpus_available']} available"),
            ("threads", f"{m['threads']} (torch default {m['threads_default']})"),
            ("torch", m["torch"]), ("device", m["device"]),
            ("load average", " ".join(map(str, m.get("load_average_start") or []))),
            ("CPU busy elsewhere", "-" if m.get("cpu_busy_at_start") is None
             else f"{100 * m['cpu_busy_at_start']:.0f}%")]
    if m.get("cuda"):
        rows.append(("gpu", f"{m['cuda']['name']} (CUDA {m['cuda']['cuda_version']})"))
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def _short(config: str) -> str:
    return config.removeprefix("m2sformer-")


def forward_table(section: dict) -> Table:
    table = Table(title=f"forward throughput ({section['dtype']}, {section['device']})",
                  caption=f"ms: median per batch; % peak: of the fp32 matmul peak, "
                          f"{section['matmul_peak_gflops']:,.1f} GFLOP/s (before "
                          f"{section['matmul_peak_before']['gflops']:,.1f}, after "
                          f"{section['matmul_peak_after']['gflops']:,.1f}); % local: of the "
                          f"peak measured just before and after the row")
    for name in ("model", "size", "batch", "GMAC/img", "img/s", "ms", "± std", "GFLOP/s",
                 "% peak", "% local"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for r in section["results"]:
        compiled = " (compiled)" if r.get("variant") == "compiled" else ""
        table.add_row(_short(r["config"]) + compiled, str(r["size"]), str(r["batch"]),
                      _f(r["gmacs_per_image"], 2), _f(r["images_per_s"], 2),
                      _f(r["ms_per_batch"], 1), _f(r["ms_per_batch_std"], 1),
                      _f(r["gflops"], 1), _f(r["pct_of_matmul_peak"], 1),
                      _f(r.get("pct_of_local_matmul_peak"), 1))
    return table


def scan_table(s: dict) -> Table:
    compiled = ", compiled" if s["forward"].get("compiled") else ""
    table = Table(title=f"scan: {s['images']} JPEGs {s['image_width']}x{s['image_height']}, "
                        f"{_short(s['config'])} at {s['input_size']}{compiled}, {s['device']}, "
                        f"{s['workers']} workers, batch {s['batch_size']}", show_header=False)
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    startup = s["startup"]
    rows = [("scan wall time", _f(s["scan_wall_s"], 2, " s")),
            ("  start-up: python + imports", _f(startup["python_imports_s"], 2, " s")),
            ("  start-up: model load", _f(startup["model_load_s"], 2, " s")),
            ("scan throughput", _f(s["scan_images_per_s"], 2, " img/s")),
            ("scan throughput, start-up excluded",
             _f(s["scan_images_per_s_excluding_startup"], 2, " img/s")),
            ("bare forward throughput (mean of before and after)",
             _f(s["forward_images_per_s"], 2, " img/s")),
            ("  before / after the scan",
             f"{_f(s['forward']['before']['images_per_s'], 2)} / "
             f"{_f(s['forward']['after']['images_per_s'], 2)} img/s"
             if "before" in s["forward"] else "n/a"),
            ("ratio scan / forward", _f(s["ratio_scan_to_forward"], 3)),
            ("ratio scan / forward, start-up excluded",
             _f(s["ratio_scan_to_forward_excluding_startup"], 3)),
            ("overhead per image beyond the forward", _f(s["overhead_ms_per_image"], 1, " ms")),
            ("scan CPU use (user+sys / wall)", _f(s["scan_cpu_utilisation"], 2, " cores"))]
    stream = s["forward"]["after"].get("jpeg_stream")
    if stream:  # part of the bare forward above; per image, after the scan
        rows += [("JPEG stream: reading coefficients", _f(stream["read_ms_per_image"], 1, " ms")),
                 ("JPEG stream: network", _f(stream["stream_ms_per_image"], 1, " ms"))]
    for key, value in rows:
        table.add_row(key, value)
    return table


def memory_table(section: dict) -> Table:
    base = section["baseline"]
    cuda = any(c.get("cuda_max_allocated_mib") is not None for c in section["cases"])
    table = Table(title=f"scan peak memory, MiB ({_short(section['config'])} at "
                        f"{section['input_size']}, {section['device']}, "
                        f"{section['workers']} workers)",
                  caption=f"RSS: VmHWM of the scan process; PSS: whole process tree, sampled; "
                          f"baseline (imports + model, no image): "
                          f"{base['peak_rss_mib']:,.0f} MiB")
    columns = ["image", "mode", "tiles", "decoded", "peak RSS", "tree PSS", "- baseline",
               "wall s"] + (["CUDA"] if cuda else [])
    for name in columns:
        table.add_column(name, justify="left" if name in ("image", "mode") else "right")
    for c in section["cases"]:
        row = [f"{c['width']}x{c['height']}", c["mode"], _f(c["tiles"]),
               _f(c["decoded_mib"], 1), _f(c["peak_rss_mib"], 0), _f(c["tree_peak_pss_mib"], 0),
               _f(c["peak_over_baseline_mib"], 0), _f(c["wall_s"], 1)]
        if cuda:
            row.append(_f(c.get("cuda_max_allocated_mib"), 0))
        table.add_row(*row)
    return table


def gpu_table(section: dict) -> Table:
    table = Table(title=f"GPU: {section['config']} on {section['device']}",
                  caption="% peak: of the matmul peak of the same dtype")
    for name in ("size", "dtype", "batch", "img/s", "ms/batch", "± std", "TFLOP/s",
                 "% peak", "peak MiB"):
        table.add_column(name, justify="right")
    for r in section["results"]:
        if "skipped" in r:
            table.add_row(str(r["size"]), r["dtype"], "-", r["skipped"], "", "", "", "", "")
            continue
        table.add_row(str(r["size"]), r["dtype"], str(r["batch"]), _f(r["images_per_s"], 1),
                      _f(r["ms_per_batch"], 2), _f(r["ms_per_batch_std"], 2),
                      _f(r["gflops"] / 1e3, 1), _f(r["pct_of_matmul_peak"], 1),
                      _f(r["peak_allocated_mib"], 0))
    return table


TABLES = {"forward": forward_table, "scan": scan_table, "memory": memory_table,
          "gpu": gpu_table}


def print_section(console: Console, name: str, section: dict) -> None:
    if "error" in section:
        console.print(f"[bold red]{name} failed:[/] {escape(section['error'])}", highlight=False)
    elif "skipped" in section:
        console.print(f"[yellow]{name} skipped:[/] {escape(section['skipped'])}", highlight=False)
    else:
        console.print(TABLES[name](section))
