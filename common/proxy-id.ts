/**
 * Maximum proxy id length, in characters: the maximum length of a DNS name and of a Kubernetes
 * pod name. Control planes share each proxy's id with the other replicas, so the id bounds
 * the shared record.
 */
export const MAX_PROXY_ID_LENGTH = 253;

/** Control characters, which would garble log lines and the status table. */
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/u;

/**
 * Returns why `id` cannot name a proxy, or undefined when it can: it must be 1 to
 * {@link MAX_PROXY_ID_LENGTH} characters without control characters.
 */
export function proxyIdProblem(id: string): string | undefined {
  if (id === '') return 'is empty';
  if (id.length > MAX_PROXY_ID_LENGTH) {
    return `has ${id.length} characters; at most ${MAX_PROXY_ID_LENGTH} are allowed`;
  }
  if (CONTROL_CHARACTER.test(id)) return 'contains a control character';
  return undefined;
}
