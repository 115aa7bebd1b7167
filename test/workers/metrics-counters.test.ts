// The isolate's counters stay bounded: methods come from request paths a client chooses, so past
// 2,000 label sets a counter's new series all count under {overflow="true"}.
import { describe, expect, it } from "vitest";
import { count, renderCounters } from "../../src/metrics/counters.ts";

describe("counters", () => {
  it("keeps at most 2,000 series per counter and counts the rest as overflow", () => {
    for (let i = 0; i < 2_100; i++) count("kiln_index_write_failures_total", { index: `made-up-${i}` });
    count("kiln_index_write_failures_total", { index: "made-up-0" }, 5);
    const out: string[] = [];
    renderCounters(out);
    const series = out.filter((l) => l.startsWith("kiln_index_write_failures_total{"));
    expect(series).toHaveLength(2_001);
    expect(series).toContain('kiln_index_write_failures_total{overflow="true"} 100');
    expect(series).toContain('kiln_index_write_failures_total{index="made-up-0"} 6');
  });
});
