#ifndef ARITH_H
#define ARITH_H
int add(int a, int b);
int mul(int a, int b);
#endif
