// The test cases of one test attempt (its test.xml, parsed into ResultStore's TestSuite): failed
// and erroring cases first with their messages, then the rest, folded when there are many.
import { TestCase_Result, type TestCase, type TestSuite } from "../../../src/gen/google/devtools/resultstore/v2/test_suite_pb.ts";
import { durationMs, ms } from "../format.ts";
import { StatusBadge } from "./common.tsx";

/** Every case in the suite and its nested suites, with the suite it belongs to. */
function casesOf(s: TestSuite, suite = s.suiteName): { suite: string; c: TestCase }[] {
  return s.tests.flatMap((t) =>
    t.testType.case === "testCase" ? [{ suite, c: t.testType.value }] : t.testType.case === "testSuite" ? casesOf(t.testType.value, t.testType.value.suiteName) : [],
  );
}

const failed = (c: TestCase) => c.failures.length > 0 || c.errors.length > 0;

function verdict(c: TestCase): { text: string; tone: "good" | "bad" | "warn" } {
  if (c.errors.length) return { text: "ERROR", tone: "bad" };
  if (c.failures.length) return { text: "FAILED", tone: "bad" };
  if (c.result === TestCase_Result.SKIPPED || c.result === TestCase_Result.FILTERED) return { text: "SKIPPED", tone: "warn" };
  return { text: "PASSED", tone: "good" };
}

function Row({ suite, c }: { suite: string; c: TestCase }) {
  const v = verdict(c);
  const messages = [...c.failures.map((f) => [f.failureMessage, f.exceptionType, f.stackTrace]), ...c.errors.map((e) => [e.errorMessage, e.exceptionType, e.stackTrace])];
  return (
    <tr>
      <td>
        <StatusBadge value={v.text} tone={v.tone} />
      </td>
      <td>
        <code>{c.className || suite}</code> {c.caseName}
        {messages.map(([message, type, trace]) => (
          <details open>
            <summary>{[type, message].filter(Boolean).join(": ") || "failed"}</summary>
            {trace && <pre class="trace">{trace}</pre>}
          </details>
        ))}
      </td>
      <td class="num">{ms(durationMs(c.timing?.duration))}</td>
    </tr>
  );
}

export function TestCases({ suite }: { suite: TestSuite }) {
  const all = casesOf(suite);
  if (all.length === 0) return null;
  const bad = all.filter((x) => failed(x.c));
  const good = all.filter((x) => !failed(x.c));
  const table = (rows: typeof all, label: string) => (
    <table class="list" aria-label={label}>
      <tbody>
        {rows.map((x) => (
          <Row suite={x.suite} c={x.c} />
        ))}
      </tbody>
    </table>
  );
  return (
    <div class="test-cases">
      <h4>{`Test cases: ${all.length}, ${bad.length} failed`}</h4>
      {bad.length > 0 && table(bad, "failed test cases")}
      {good.length > 0 && (
        <details open={good.length <= 20 && bad.length === 0}>
          <summary>{`${good.length} passed or skipped`}</summary>
          {table(good, "other test cases")}
        </details>
      )}
    </div>
  );
}
