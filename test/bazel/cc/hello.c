/* A tiny C program: built with cc_binary (remotely in the e2e tests) and run by hello_test. */
#include <stdio.h>

static unsigned checksum(const char *s) {
  unsigned h = 5381;
  while (*s) h = h * 33 + (unsigned char)*s++;
  return h;
}

int main(int argc, char **argv) {
  const char *who = argc > 1 ? argv[1] : "kiln";
  printf("hello %s %u\n", who, checksum(who));
  return 0;
}
