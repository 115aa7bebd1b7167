// The runner key the workerd tests' scripted runners dial with (vitest.config.mts sets RUNNER_KEYS).
export const TEST_RUNNER_KEY = "test-runner-key-0123456789abcdef-0123456789";
