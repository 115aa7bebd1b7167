// The test.xml files a batch of build events names, read from the CAS and parsed, ahead of the
// InvocationDO's transaction (which cannot wait on storage). Bazel uploads a test's outputs before
// it sends the TestResult that names them, so they are there when the event arrives. A file that
// is not in this server's CAS, is too large, or does not parse is left a File only: the test
// result itself is never refused for its XML.
import type { HandlerContext } from "@connectrpc/connect";
import { toBinary } from "@bufbuild/protobuf";
import type { PublishBuildToolEventStreamRequest } from "../gen/google/devtools/build/v1/publish_build_event_pb.ts";
import { TestSuiteSchema } from "../gen/google/devtools/resultstore/v2/test_suite_pb.ts";
import { parseFileUri } from "../resultstore/file-uri.ts";
import { readBlob } from "../services/blobs.ts";
import { resultStoreFiles } from "./bep.ts";
import { bazelEventOf } from "./ingest.ts";
import { parseTestXml, TEST_XML_MAX_BYTES } from "./test-xml.ts";

/** URIs of test.xml files in TestResult events, in order, without repeats. */
export function testXmlUris(requests: readonly PublishBuildToolEventStreamRequest[]): string[] {
  const out = new Set<string>();
  requests.forEach((r, i) => {
    let ev;
    try {
      ev = bazelEventOf(r, `requests[${i}]`);
    } catch {
      return; // the transaction refuses it with the reason
    }
    if (ev?.payload.case !== "testResult") return;
    const xml = resultStoreFiles(ev.payload.value.testActionOutput).find((f) => f.uid === "test.xml");
    if (xml?.uri.startsWith("bytestream://")) out.add(xml.uri);
  });
  return [...out];
}

async function readTestSuite(ctx: HandlerContext, uri: string): Promise<Uint8Array | undefined> {
  const r = parseFileUri(uri);
  if (r.digest.size > TEST_XML_MAX_BYTES) return undefined;
  const blob = await readBlob(ctx, r.instanceName, r.digest);
  const suite = parseTestXml(await new Response(blob.body).text());
  return suite ? toBinary(TestSuiteSchema, suite) : undefined;
}

/** The parsed test.xml of each TestResult in the batch, by file URI (those that could be read). */
export async function testSuitesOf(ctx: HandlerContext, requests: readonly PublishBuildToolEventStreamRequest[]): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (const uri of testXmlUris(requests)) {
    const suite = await readTestSuite(ctx, uri).catch(() => undefined);
    if (suite) out[uri] = suite;
  }
  return out;
}
