// Every test must check something: a test that ends without running an expect() fails.
import { beforeEach, expect } from '@jest/globals';

beforeEach(() => {
  expect.hasAssertions();
});
