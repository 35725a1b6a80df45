/** Jest in ESM mode: @kubernetes/client-node 1.x is ESM-only. */
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.test.json' }],
  },
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  // The VM lab boots qemu for minutes: `make lab-vm-test` runs it (VIPR_JEST_VM=1).
  testPathIgnorePatterns: process.env.VIPR_JEST_VM === '1' ? ['/node_modules/'] : ['/node_modules/', '<rootDir>/test/vm/'],
  setupFiles: ['<rootDir>/test/setup-env.ts'],
  testTimeout: 60000,
};
