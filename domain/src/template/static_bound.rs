//! The bound on what compiling a template computes before any guard runs: the constant
//! expressions the compiler folds, measured from the syntax tree, at save time too.

use minijinja::machinery::ast::{self, CallArg, Expr, Stmt};
use minijinja::{Error, ErrorKind, Value as Scope};

use super::memory::{
    MAX_RENDERED_BYTES, VALUE_BYTES, footprint, printed_bytes, repeat_count, repeated_bytes,
};

/// Bounds what compiling a template computes ahead of any guard: the compiler folds each
/// constant expression (literals and operators over them) into its value. Their values
/// are computed here as the compiler would, each only once the values it is made of are
/// known to give one under the limit, so the bound is exact and nothing large is ever
/// computed. Every constant expression counts, nested ones too, since the compiler
/// computes each of them (some more than once, the largest of them at a time).
#[derive(Default)]
pub(super) struct Folding {
    bytes: usize,
}

impl Folding {
    fn statements(&mut self, statements: &[Stmt]) -> Result<(), Error> {
        statements
            .iter()
            .try_for_each(|statement| self.statement(statement))
    }

    pub(super) fn statement(&mut self, statement: &Stmt) -> Result<(), Error> {
        match statement {
            Stmt::Template(template) => self.statements(&template.children),
            Stmt::EmitExpr(emit) => self.expr(&emit.expr).map(drop),
            Stmt::EmitRaw(_) => Ok(()),
            Stmt::ForLoop(for_loop) => {
                self.exprs([&for_loop.target, &for_loop.iter])?;
                self.exprs(&for_loop.filter_expr)?;
                self.statements(&for_loop.body)?;
                self.statements(&for_loop.else_body)
            }
            Stmt::IfCond(condition) => {
                self.expr(&condition.expr)?;
                self.statements(&condition.true_body)?;
                self.statements(&condition.false_body)
            }
            Stmt::WithBlock(with) => {
                for (target, value) in &with.assignments {
                    self.exprs([target, value])?;
                }
                self.statements(&with.body)
            }
            Stmt::Set(set) => self.exprs([&set.target, &set.expr]),
            Stmt::SetBlock(set) => {
                self.expr(&set.target)?;
                self.exprs(&set.filter)?;
                self.statements(&set.body)
            }
            Stmt::AutoEscape(block) => {
                self.expr(&block.enabled)?;
                self.statements(&block.body)
            }
            Stmt::FilterBlock(block) => {
                self.expr(&block.filter)?;
                self.statements(&block.body)
            }
            Stmt::Do(call) => {
                self.expr(&call.call.expr)?;
                self.args(&call.call.args)
            }
        }
    }

    fn exprs<'e, 's: 'e>(
        &mut self,
        exprs: impl IntoIterator<Item = &'e Expr<'s>>,
    ) -> Result<(), Error> {
        exprs
            .into_iter()
            .try_for_each(|expr| self.expr(expr).map(drop))
    }

    fn args(&mut self, args: &[CallArg]) -> Result<(), Error> {
        self.exprs(args.iter().map(|arg| match arg {
            CallArg::Pos(expr)
            | CallArg::Kwarg(_, expr)
            | CallArg::PosSplat(expr)
            | CallArg::KwargSplat(expr) => expr,
        }))
    }

    /// The value the compiler folds `expr` into, if it folds it.
    pub(super) fn expr(&mut self, expr: &Expr) -> Result<Option<Scope>, Error> {
        let bytes = match expr {
            Expr::UnaryOp(unary) => {
                if self.expr(&unary.expr)?.is_none() {
                    return Ok(None);
                }
                VALUE_BYTES
            }
            Expr::BinOp(binary) => {
                let (left, right) = (self.expr(&binary.left)?, self.expr(&binary.right)?);
                let (Some(left), Some(right)) = (left, right) else {
                    return Ok(None);
                };
                match binary.op {
                    ast::BinOpKind::Add => {
                        footprint(&left, usize::MAX)?.saturating_add(footprint(&right, usize::MAX)?)
                    }
                    ast::BinOpKind::Concat => printed_bytes(&left, usize::MAX)?
                        .saturating_add(printed_bytes(&right, usize::MAX)?)
                        .saturating_add(VALUE_BYTES),
                    ast::BinOpKind::Mul => match (repeat_count(&left), repeat_count(&right)) {
                        (None, Some(count)) => repeated_bytes(&left, count, usize::MAX)?,
                        (Some(count), None) => repeated_bytes(&right, count, usize::MAX)?,
                        _ => VALUE_BYTES,
                    },
                    _ => VALUE_BYTES,
                }
            }
            Expr::Compare(compare) => {
                let mut constant = self.expr(&compare.expr)?.is_some();
                for operand in &compare.ops {
                    constant &= self.expr(&operand.expr)?.is_some();
                }
                if !constant {
                    return Ok(None);
                }
                VALUE_BYTES
            }
            // Literals, and lists, tuples and maps of literals, fold into what they are
            // written as; nothing else folds.
            _ => {
                self.parts(expr)?;
                return Ok(expr.as_const());
            }
        };
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > MAX_RENDERED_BYTES {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "the constant expressions of this template compute {} bytes or more when it is compiled, over the limit of {MAX_RENDERED_BYTES}",
                    self.bytes
                ),
            ));
        }
        Ok(expr.as_const())
    }

    /// Checks the expressions `expr` is made of, for an expression that does not fold.
    fn parts(&mut self, expr: &Expr) -> Result<(), Error> {
        match expr {
            Expr::Var(_) | Expr::Const(_) => Ok(()),
            Expr::UnaryOp(unary) => self.expr(&unary.expr).map(drop),
            Expr::BinOp(binary) => self.exprs([&binary.left, &binary.right]),
            Expr::Compare(compare) => {
                self.expr(&compare.expr)?;
                self.exprs(compare.ops.iter().map(|operand| &operand.expr))
            }
            Expr::Slice(slice) => {
                self.expr(&slice.expr)?;
                self.exprs(slice.start.iter().chain(&slice.stop).chain(&slice.step))
            }
            Expr::IfExpr(choice) => {
                self.exprs([&choice.test_expr, &choice.true_expr])?;
                self.exprs(&choice.false_expr)
            }
            Expr::Filter(filter) => {
                self.exprs(&filter.expr)?;
                self.args(&filter.args)
            }
            Expr::Test(test) => {
                self.expr(&test.expr)?;
                self.args(&test.args)
            }
            Expr::GetAttr(attribute) => self.expr(&attribute.expr).map(drop),
            Expr::GetItem(item) => self.exprs([&item.expr, &item.subscript_expr]),
            Expr::Call(call) => {
                self.expr(&call.expr)?;
                self.args(&call.args)
            }
            Expr::List(list) => self.exprs(&list.items),
            Expr::Tuple(tuple) => self.exprs(&tuple.items),
            Expr::Map(map) => self.exprs(map.keys.iter().chain(&map.values)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::template::Templates;
    use crate::template::fixtures::{error, render};
    #[test]
    fn what_the_compiler_computes_ahead_is_bounded_at_save_time_too() {
        const EXPECTED: &str = "when it is compiled, over the limit of 1048576";
        let templates = Templates::new();
        for source in [
            "{{ ('x' * 100000000) | length }}",
            "{{ trigger.body ~ ('x' * 100000000) }}",
            "{{ ([1, 2, 3] * 100000000) | length }}",
            "{% set a = 'x' * 2000000 %}{{ a ~ a }}",
            "{{ ('x' * 600000 ~ 'y' * 600000) | length }}",
        ] {
            let found = error(source);
            assert!(found.contains(EXPECTED), "{source}: {found}");
            let at_save = templates
                .variables(source)
                .expect_err("refused at save time");
            assert!(at_save.to_string().contains(EXPECTED), "{at_save}");
        }
        let at_save = templates
            .expression_variables("'x' * 100000000 == ''")
            .expect_err("refused at save time");
        assert!(at_save.to_string().contains(EXPECTED), "{at_save}");
        // Small constants are folded as they always were.
        assert_eq!(
            render("{{ '-' * 3 ~ [1, 2] * 2 ~ 2 ** 10 }}", json!({})),
            Ok(json!("---[1, 2, 1, 2]1024"))
        );
    }
}
