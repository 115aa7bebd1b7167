// A test's test.xml (JUnit XML, as test runners and Bazel itself write it) as a ResultStore
// TestSuite: suites, cases, failures and errors with their messages and times. The parse is
// bounded: documents with a DTD are refused (no entity expansion), and cases, nesting and text
// are capped, so a hostile or enormous file costs a bounded amount and never fails the upload.
import { create } from "@bufbuild/protobuf";
import { XMLParser } from "fast-xml-parser";
import { TestCase_Result, TestCaseSchema, TestSchema, TestSuiteSchema, type Test, type TestSuite } from "../gen/google/devtools/resultstore/v2/test_suite_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";

/** Largest test.xml parsed; a larger one stays a File only. */
export const TEST_XML_MAX_BYTES = 1024 * 1024;
const MAX_CASES = 5_000;
const MAX_DEPTH = 16;
const MAX_TEXT = 4_096;

type Node = Record<string, unknown>;
type SuiteInit = MessageInitShape<typeof TestSuiteSchema>;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: "@",
  textNodeName: "#text",
  parseTagValue: false,
  parseAttributeValue: false,
  processEntities: true,
  isArray: (name) => ["testsuite", "testcase", "failure", "error", "skipped", "property"].includes(name),
});

const text = (v: unknown): string => {
  const s = typeof v === "string" ? v : typeof v === "object" && v !== null ? String((v as Node)["#text"] ?? "") : "";
  return s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT)}…` : s;
};
const attr = (n: Node, name: string): string => text(n[`@${name}`]);
const list = (v: unknown): Node[] => (Array.isArray(v) ? v.filter((x): x is Node => typeof x === "object" && x !== null) : []);

/** JUnit's `time` (seconds, decimal) as a Timing duration. */
function timingOf(n: Node): SuiteInit["timing"] {
  const seconds = Number(attr(n, "time") || attr(n, "duration"));
  if (!Number.isFinite(seconds) || seconds < 0) return undefined;
  const whole = Math.floor(seconds);
  return { duration: { seconds: BigInt(whole), nanos: Math.round((seconds - whole) * 1e9) } };
}

const failuresOf = (n: Node) => list(n.failure).map((f) => ({ failureMessage: attr(f, "message"), exceptionType: attr(f, "type"), stackTrace: text(f) }));
const errorsOf = (n: Node) => list(n.error).map((e) => ({ errorMessage: attr(e, "message"), exceptionType: attr(e, "type"), stackTrace: text(e) }));

function resultOf(c: Node): TestCase_Result {
  if (c.skipped !== undefined) return TestCase_Result.SKIPPED;
  // Bazel's own test.xml says status="run" or "notrun"; result="..." appears in some runners.
  const status = (attr(c, "status") || attr(c, "result")).toLowerCase();
  if (status === "notrun" || status === "skipped") return TestCase_Result.SKIPPED;
  if (status === "filtered") return TestCase_Result.FILTERED;
  if (status === "interrupted") return TestCase_Result.INTERRUPTED;
  if (status === "cancelled") return TestCase_Result.CANCELLED;
  return TestCase_Result.COMPLETED;
}

function suiteOf(n: Node, depth: number, budget: { cases: number }): TestSuite {
  const tests: Test[] = [];
  for (const c of list(n.testcase)) {
    if (budget.cases-- <= 0) break;
    const value = create(TestCaseSchema, { caseName: attr(c, "name"), className: attr(c, "classname"), result: resultOf(c), failures: failuresOf(c), errors: errorsOf(c), timing: timingOf(c) });
    tests.push(create(TestSchema, { testType: { case: "testCase", value } }));
  }
  if (depth < MAX_DEPTH) {
    for (const s of list(n.testsuite)) tests.push(create(TestSchema, { testType: { case: "testSuite", value: suiteOf(s, depth + 1, budget) } }));
  }
  const properties = list((n.properties as Node | undefined)?.property).map((p) => ({ key: attr(p, "name"), value: attr(p, "value") }));
  return create(TestSuiteSchema, { suiteName: attr(n, "name"), tests, failures: failuresOf(n), errors: errorsOf(n), timing: timingOf(n), properties });
}

/**
 * The TestSuite a test.xml describes, or undefined when it is not JUnit XML this parser accepts.
 * A <testsuites> root with one suite is that suite; with several, a nameless suite of them.
 */
export function parseTestXml(xml: string): TestSuite | undefined {
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) return undefined;
  let doc: Node;
  try {
    doc = parser.parse(xml) as Node;
  } catch {
    return undefined;
  }
  const budget = { cases: MAX_CASES };
  const root = doc.testsuites as Node | undefined;
  if (root && typeof root === "object") {
    const suites = list(root.testsuite);
    if (suites.length === 1) return suiteOf(suites[0]!, 1, budget);
    const tests = suites.map((s) => create(TestSchema, { testType: { case: "testSuite", value: suiteOf(s, 1, budget) } }));
    return create(TestSuiteSchema, { suiteName: attr(root, "name"), tests });
  }
  const single = list(doc.testsuite)[0];
  return single ? suiteOf(single, 1, budget) : undefined;
}
