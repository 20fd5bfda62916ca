// Forward-mode dual numbers (value + one tangent). Running the templated BPTT backward pass on
// Dual<double> with weight tangents v gives the exact Hessian-vector product of the meta-loss
// (forward-over-reverse), which M-L2O's second-order meta-gradient needs. Everything is ML2O_HD so
// that the CUDA kernels run the same pass on Dual<float>.
#pragma once
#include <cmath>

#include "ml2o/hd.hpp"

namespace ml2o {

template <class S> ML2O_HD S value_of(S x) { return x; }
// The value with no derivative (autodiff's stop_gradient); the identity for plain scalars.
template <class S> ML2O_HD S stop_gradient(S x) { return x; }
// The tangent; a plain scalar has none.
template <class S> ML2O_HD S tangent_of(S) { return S(0); }

template <class T> struct Dual {
  T v = T(0), d = T(0);
  Dual() = default;
  ML2O_HD Dual(T value) : v(value), d(T(0)) {}  // NOLINT: constants promote implicitly
  ML2O_HD Dual(T value, T tangent) : v(value), d(tangent) {}
  ML2O_HD explicit operator T() const { return v; }
  ML2O_HD Dual& operator+=(const Dual& o) { v += o.v; d += o.d; return *this; }
  ML2O_HD Dual& operator-=(const Dual& o) { v -= o.v; d -= o.d; return *this; }
  ML2O_HD Dual& operator*=(const Dual& o) { d = d * o.v + v * o.d; v *= o.v; return *this; }
  ML2O_HD Dual& operator/=(const Dual& o) { *this = *this / o; return *this; }
  friend ML2O_HD Dual operator+(Dual a, const Dual& b) { return a += b; }
  friend ML2O_HD Dual operator-(Dual a, const Dual& b) { return a -= b; }
  friend ML2O_HD Dual operator-(const Dual& a) { return Dual(-a.v, -a.d); }
  friend ML2O_HD Dual operator*(const Dual& a, const Dual& b) { return Dual(a.v * b.v, a.d * b.v + a.v * b.d); }
  friend ML2O_HD Dual operator/(const Dual& a, const Dual& b) {
    return Dual(a.v / b.v, (a.d * b.v - a.v * b.d) / (b.v * b.v));
  }
  friend ML2O_HD bool operator<(const Dual& a, const Dual& b) { return a.v < b.v; }
  friend ML2O_HD bool operator>(const Dual& a, const Dual& b) { return a.v > b.v; }
  friend ML2O_HD bool operator<=(const Dual& a, const Dual& b) { return a.v <= b.v; }
  friend ML2O_HD bool operator>=(const Dual& a, const Dual& b) { return a.v >= b.v; }
  friend ML2O_HD bool operator==(const Dual& a, const Dual& b) { return a.v == b.v; }
  friend ML2O_HD Dual exp(const Dual& a) { const T e = std::exp(a.v); return Dual(e, e * a.d); }
  friend ML2O_HD Dual log(const Dual& a) { return Dual(std::log(a.v), a.d / a.v); }
  friend ML2O_HD Dual tanh(const Dual& a) { const T t = std::tanh(a.v); return Dual(t, (T(1) - t * t) * a.d); }
  friend ML2O_HD Dual sqrt(const Dual& a) {
    const T s = std::sqrt(a.v);
    return Dual(s, s > T(0) ? a.d / (T(2) * s) : T(0));
  }
  friend ML2O_HD Dual fabs(const Dual& a) { return a.v < T(0) ? -a : (a.v > T(0) ? a : Dual(T(0), T(0))); }
  friend ML2O_HD Dual cos(const Dual& a) { return Dual(std::cos(a.v), -std::sin(a.v) * a.d); }
  friend ML2O_HD Dual sin(const Dual& a) { return Dual(std::sin(a.v), std::cos(a.v) * a.d); }
};

template <class T> ML2O_HD T value_of(const Dual<T>& x) { return x.v; }
template <class T> ML2O_HD Dual<T> stop_gradient(const Dual<T>& x) { return Dual<T>(x.v, T(0)); }
template <class T> ML2O_HD T tangent_of(const Dual<T>& x) { return x.d; }

}  // namespace ml2o
