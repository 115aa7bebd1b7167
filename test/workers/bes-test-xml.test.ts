// test.xml of a TestResult event parsed into the test action's TestSuite (cases, failures, errors,
// times), read from the CAS when the event is ingested; and the parser's bounds.
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { FileSchema } from "../../src/bes/bep.ts";
import { parseTestXml } from "../../src/bes/test-xml.ts";
import { ContentAddressableStorage } from "../../src/gen/build/bazel/remote/execution/v2/remote_execution_pb.ts";
import { BuildEventIngest } from "../../src/gen/kiln/bes/v1/ingest_pb.ts";
import { TestCase_Result, type TestCase, type TestSuite } from "../../src/gen/google/devtools/resultstore/v2/test_suite_pb.ts";
import { exportAll, fixtureEvents, toolStream } from "./bes-helpers.ts";
import { digestOf, grpcWebClient } from "./helpers.ts";

const ingest = grpcWebClient(BuildEventIngest);
const cas = grpcWebClient(ContentAddressableStorage);

const JUNIT = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="math.AddTest" tests="3" failures="1" errors="0" time="1.25">
    <properties><property name="seed" value="42"/></properties>
    <testcase name="adds" classname="math.AddTest" time="0.5"/>
    <testcase name="overflows" classname="math.AddTest" time="0.75">
      <failure message="expected 3 &amp; got 4" type="AssertionError">at AddTest.java:12</failure>
    </testcase>
    <testcase name="later" classname="math.AddTest"><skipped/></testcase>
  </testsuite>
</testsuites>`;

const cases = (s: TestSuite): TestCase[] =>
  s.tests.flatMap((t) => (t.testType.case === "testCase" ? [t.testType.value] : t.testType.case === "testSuite" ? cases(t.testType.value) : []));

describe("parseTestXml", () => {
  it("reads suites, cases, failures, skips, times and properties", () => {
    const s = parseTestXml(JUNIT)!;
    expect(s.suiteName).toBe("math.AddTest");
    expect(s.properties).toMatchObject([{ key: "seed", value: "42" }]);
    expect(s.timing?.duration).toMatchObject({ seconds: 1n, nanos: 250_000_000 });
    const [adds, overflows, later] = cases(s);
    expect(adds).toMatchObject({ caseName: "adds", className: "math.AddTest", result: TestCase_Result.COMPLETED, failures: [] });
    expect(overflows!.failures).toMatchObject([{ failureMessage: "expected 3 & got 4", exceptionType: "AssertionError", stackTrace: "at AddTest.java:12" }]);
    expect(later!.result).toBe(TestCase_Result.SKIPPED);
  });

  it("reads Bazel's own test.xml (a test that wrote none) and several suites", () => {
    const bazel = `<?xml version="1.0" encoding="UTF-8"?><testsuites><testsuite name="failing_test" tests="1" failures="0" errors="1"><testcase name="failing_test" status="run" duration="0" time="0"><error message="exited with error code 1"></error></testcase><system-out>Generated test.log</system-out></testsuite></testsuites>`;
    expect(cases(parseTestXml(bazel)!)[0]!.errors).toMatchObject([{ errorMessage: "exited with error code 1" }]);
    const two = parseTestXml(`<testsuites name="all"><testsuite name="a"><testcase name="x"/></testsuite><testsuite name="b"><testcase name="y" status="notrun"/></testsuite></testsuites>`)!;
    expect(two.tests.map((t) => (t.testType.value as TestSuite).suiteName)).toEqual(["a", "b"]);
    expect(cases(two).map((c) => [c.caseName, c.result])).toEqual([["x", TestCase_Result.COMPLETED], ["y", TestCase_Result.SKIPPED]]);
  });

  it("refuses DTDs (no entity expansion), non-JUnit and broken XML, and caps cases and nesting", () => {
    expect(parseTestXml(`<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><testsuite name="&b;"/>`)).toBeUndefined();
    expect(parseTestXml(`<html><body>not a test</body></html>`)).toBeUndefined();
    expect(parseTestXml(`not xml at all <<<`)).toBeUndefined();
    const many = `<testsuite name="big">${"<testcase name='c'/>".repeat(6_000)}</testsuite>`;
    expect(cases(parseTestXml(many)!)).toHaveLength(5_000);
    const deep = `${"<testsuite name='d'>".repeat(40)}<testcase name='leaf'/>${"</testsuite>".repeat(40)}`;
    let depth = 0;
    for (let s: TestSuite | undefined = parseTestXml(deep); s; s = s.tests[0]?.testType.case === "testSuite" ? s.tests[0].testType.value : undefined) depth++;
    expect(depth).toBeLessThanOrEqual(16);
  });
});

/** The failing-test fixture with its TestResult's test.xml pointing at `uri`. */
function failingTestWithXml(uri: string) {
  const events = fixtureEvents("failing-test");
  const result = events.find((e) => e.payload.case === "testResult")!;
  if (result.payload.case !== "testResult") throw new Error("no TestResult");
  const files = result.payload.value.testActionOutput.filter((f) => f.name !== "test.xml");
  files.push(create(FileSchema, { name: "test.xml", file: { case: "uri", value: uri } }));
  result.payload.value.testActionOutput = files;
  return toolStream(events);
}

async function testActionOf(invocationId: string) {
  const all = await exportAll(invocationId);
  return all.actions.find((a) => a.id?.targetId === "//:failing_test" && a.actionType.case === "testAction")!;
}

describe("BES ingestion of test.xml", () => {
  it("a TestResult's test.xml in the CAS becomes the test action's TestSuite", async () => {
    const data = new TextEncoder().encode(JUNIT);
    const digest = await digestOf(data);
    await cas.batchUpdateBlobs({ requests: [{ digest, data }] });
    const replay = failingTestWithXml(`bytestream://cache.example:443/blobs/${digest.hash}/${digest.sizeBytes}`);
    await ingest.ingestBuildToolEvents({ requests: replay.requests });
    const action = await testActionOf(replay.invocationId);
    if (action.actionType.case !== "testAction") throw new Error("not a test action");
    const suite = action.actionType.value.testSuite!;
    expect(suite.suiteName).toBe("math.AddTest");
    expect(cases(suite).find((c) => c.caseName === "overflows")!.failures[0]!.failureMessage).toBe("expected 3 & got 4");
    expect(action.files.some((f) => f.uid === "test.xml")).toBe(true);
  });

  it("a test.xml that is missing from the CAS or is not JUnit XML leaves the result without a TestSuite, and the event is applied", async () => {
    const junk = new TextEncoder().encode("<html>not junit</html>");
    const digest = await digestOf(junk);
    await cas.batchUpdateBlobs({ requests: [{ digest, data: junk }] });
    const absent = await digestOf(new TextEncoder().encode(`never uploaded ${crypto.randomUUID()}`));
    for (const d of [digest, absent]) {
      const replay = failingTestWithXml(`bytestream://cache.example/blobs/${d.hash}/${d.sizeBytes}`);
      const res = await ingest.ingestBuildToolEvents({ requests: replay.requests });
      expect(res.committedSequenceNumber).toBe(BigInt(replay.requests.length));
      const action = await testActionOf(replay.invocationId);
      if (action.actionType.case !== "testAction") throw new Error("not a test action");
      expect(action.actionType.value.testSuite).toBeUndefined();
      expect(action.files.find((f) => f.uid === "test.xml")?.uri).toContain(d.hash);
    }
  });
});
