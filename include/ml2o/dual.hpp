// Forward-mode dual numbers (value + one tangent). Running the templated BPTT backward pass on
// Dual<double> with weight tangents v gives the exact Hessian-vector product of the meta-loss
// (forward-over-reverse), which M-L2O's second-order meta-gradient needs.
#pragma once
#include <cmath>

namespace ml2o {

template <class S> inline S value_of(S x) { return x; }
// The value with no derivative (autodiff's stop_gradient); the identity for plain scalars.
template <class S> inline S stop_gradient(S x) { return x; }

template <class T> struct Dual {
  T v = T(0), d = T(0);
  Dual() = default;
  Dual(T value) : v(value), d(T(0)) {}  // NOLINT: constants promote implicitly
  Dual(T value, T tangent) : v(value), d(tangent) {}
  explicit operator T() const { return v; }
  Dual& operator+=(const Dual& o) { v += o.v; d += o.d; return *this; }
  Dual& operator-=(const Dual& o) { v -= o.v; d -= o.d; return *this; }
  Dual& operator*=(const Dual& o) { d = d * o.v + v * o.d; v *= o.v; return *this; }
  Dual& operator/=(const Dual& o) { *this = *this / o; return *this; }
  friend Dual operator+(Dual a, const Dual& b) { return a += b; }
  friend Dual operator-(Dual a, const Dual& b) { return a -= b; }
  friend Dual operator-(const Dual& a) { return Dual(-a.v, -a.d); }
  friend Dual operator*(const Dual& a, const Dual& b) { return Dual(a.v * b.v, a.d * b.v + a.v * b.d); }
  friend Dual operator/(const Dual& a, const Dual& b) {
    return Dual(a.v / b.v, (a.d * b.v - a.v * b.d) / (b.v * b.v));
  }
  friend bool operator<(const Dual& a, const Dual& b) { return a.v < b.v; }
  friend bool operator>(const Dual& a, const Dual& b) { return a.v > b.v; }
  friend bool operator<=(const Dual& a, const Dual& b) { return a.v <= b.v; }
  friend bool operator>=(const Dual& a, const Dual& b) { return a.v >= b.v; }
  friend bool operator==(const Dual& a, const Dual& b) { return a.v == b.v; }
  friend Dual exp(const Dual& a) { const T e = std::exp(a.v); return Dual(e, e * a.d); }
  friend Dual log(const Dual& a) { return Dual(std::log(a.v), a.d / a.v); }
  friend Dual tanh(const Dual& a) { const T t = std::tanh(a.v); return Dual(t, (T(1) - t * t) * a.d); }
  friend Dual sqrt(const Dual& a) {
    const T s = std::sqrt(a.v);
    return Dual(s, s > T(0) ? a.d / (T(2) * s) : T(0));
  }
  friend Dual fabs(const Dual& a) { return a.v < T(0) ? -a : (a.v > T(0) ? a : Dual(T(0), T(0))); }
  friend Dual cos(const Dual& a) { return Dual(std::cos(a.v), -std::sin(a.v) * a.d); }
  friend Dual sin(const Dual& a) { return Dual(std::sin(a.v), std::cos(a.v) * a.d); }
};

template <class T> inline T value_of(const Dual<T>& x) { return x.v; }
template <class T> inline Dual<T> stop_gradient(const Dual<T>& x) { return Dual<T>(x.v, T(0)); }

}  // namespace ml2o
