// The invocation's authorization_token, compared in constant time (crypto.subtle.timingSafeEqual).
// Synchronous on purpose: the check runs inside the Durable Object's transaction. Only the length
// can show through timing, and a valid token is always a 36-character UUID.
const encoder = new TextEncoder();

export function tokenMatches(stored: string, presented: string): boolean {
  const a = encoder.encode(stored);
  const b = encoder.encode(presented);
  if (a.byteLength !== b.byteLength) {
    crypto.subtle.timingSafeEqual(a, a);
    return false;
  }
  return crypto.subtle.timingSafeEqual(a, b);
}
