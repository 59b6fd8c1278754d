"""Efficiency, GPU-hours and failure reports over the registry and sacct's records.

  model       the dataclasses a report is made of, and the rows it is computed from
  aggregate   pure: those rows to a Report (per-run figures, per-sweep sums, failures by cause, best runs)
  collect     the edge: reads the registry (slurmml.registry.report_reads) and builds the Report
  records     a Report's runs as flat records, for CSV
  html        the Report as one self-contained HTML page, with SVG from html_charts
  progress    how far a sweep has got, for `slurmml watch`
"""
