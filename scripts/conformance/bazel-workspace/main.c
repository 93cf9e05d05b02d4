#include <stdio.h>
#include "arith.h"
#include "version.h"
int main(void) {
  printf("%s: 2+3=%d 6*7=%d\n", GREETING, add(2, 3), mul(6, 7));
  return 0;
}
