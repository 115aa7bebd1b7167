// PUT /k stores the body under k (Content-Length required, streamed; ?sha256=HEX has R2 verify it,
// as Kiln's verified puts do); GET /k streams it back.
interface Env { B: R2Bucket }
export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    const key = url.pathname.slice(1);
    const sha256 = url.searchParams.get("sha256") ?? undefined;
    if (request.method === "PUT") return (await env.B.put(key, request.body, { sha256 })) ? new Response(null) : new Response(null, { status: 500 });
    const obj = request.method === "GET" ? await env.B.get(key) : null;
    return obj ? new Response(obj.body, { headers: { "content-length": String(obj.size) } }) : new Response(null, { status: 404 });
  },
};
